"""WebUI building blocks the accordion needs, each with a fallback for hosts that lack it."""

from __future__ import annotations

import contextlib

from . import animatediff, flavour, paths


def accordion(value: bool, label: str, elem_id: str):
    """``InputAccordion`` (A1111 >= 1.6 and Forge): the header is the on/off switch."""
    from modules import ui_components

    factory = getattr(ui_components, "InputAccordion", None)
    if factory is None:  # A1111 < 1.6: a plain checkbox in a group still gives one boolean
        return _CheckboxGroup(value, label, elem_id)
    return factory(value, label=label, elem_id=elem_id)


class _CheckboxGroup:
    def __init__(self, value, label, elem_id):
        import gradio as gr

        self._group = gr.Group(elem_id=elem_id)
        self._value, self._label, self._elem_id = value, label, elem_id

    def __enter__(self):
        import gradio as gr

        self._group.__enter__()
        return gr.Checkbox(value=self._value, label=f"Enable {self._label}", elem_id=f"{self._elem_id}_enabled")

    def __exit__(self, *exc):
        return self._group.__exit__(*exc)


def refresh_button(dropdown, tab: str):
    return refresh_keeping(dropdown, list_discriminators, default_discriminator, f"{tab}_motionprompt_refresh")


def refreshed(current, choices: list[str], default) -> str | None:
    """After 🔄: the pick stays while its file is still there; otherwise (nothing picked, or the file gone)
    ``default(choices)``, so a file that appeared since start-up is selected without a second click."""
    return current if current and current in choices else default(choices)


def refresh_keeping(dropdown, list_choices, default, elem_id: str):
    """A1111's 🔄 tool button (``ui_common.create_refresh_button`` re-reads the choices only, and cannot see the
    current value) that also reads the dropdown, so it can keep the pick or choose ``default``."""
    import gradio as gr
    from modules import ui_common, ui_components

    def refresh(current):
        choices = list_choices()
        return gr.update(choices=choices, value=refreshed(current, choices, default))

    button = ui_components.ToolButton(value=getattr(ui_common, "refresh_symbol", "\U0001f504"), elem_id=elem_id)
    button.click(fn=refresh, inputs=[dropdown], outputs=[dropdown])
    return button


def list_discriminators() -> list[str]:
    paths.ensure_models_dir()
    return paths.list_discriminators()


LAST_USED_KEY = "motionprompt_discriminator"  # in shared.opts (config.json), not a visible setting


def default_discriminator(choices: list[str]) -> str | None:
    """The discriminator of the last guided generation, else the newest file (most likely just trained)."""
    from modules import shared

    last = shared.opts.data.get(LAST_USED_KEY)
    if last in choices:
        return last
    if not choices:
        return None
    return newest(choices, paths.models_dir())


def newest(choices: list[str], root) -> str | None:
    """The most recently written file of ``choices`` (names relative to ``root``): most likely the one just made."""
    return max(choices, key=lambda name: _mtime(root / name)) if choices else None


def remember_discriminator(name: str) -> None:
    """Called when a generation starts with ``name``; saved like any setting so a restart keeps it."""
    from modules import shared

    if not name or shared.opts.data.get(LAST_USED_KEY) == name:
        return
    shared.opts.data[LAST_USED_KEY] = name
    save = getattr(shared.opts, "save", None)
    filename = getattr(shared, "config_filename", None)
    if callable(save) and filename:
        with contextlib.suppress(OSError):  # read-only install: remembered until restart
            save(filename)


def _mtime(path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def status_line() -> str | None:
    """Shown in the accordion when guidance cannot run on this WebUI at all (known at UI build time)."""
    if _is_forge():
        if flavour.ui_kind() == flavour.FORGE2:
            where = "Forge 2 (current main): AnimateDiff cannot run there"
        else:
            where = "Forge: this version's sampling path is neither early-2024 Forge's nor reForge's"
        return (f"Guidance is unavailable on {where}. Use early-2024 Forge (git tag 'previous') or reForge with "
                "sd-webui-animatediff forge/master. The MotionPrompt tab (discriminator training) works.")
    if not animatediff.installed():
        branch = " (branch forge/master on Forge)" if flavour.ui_kind() == flavour.FORGE else ""
        return f"Install sd-webui-animatediff{branch}: MotionPrompt guides AnimateDiff videos."
    return None


def _is_forge() -> bool:
    """A Forge guidance cannot run on (Forge 2, or one of unknown lineage); early-2024 Forge and reForge are guided."""
    return flavour.ui_kind() in (flavour.FORGE2, flavour.FORGE_OTHER)
