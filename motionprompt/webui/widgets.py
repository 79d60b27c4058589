"""WebUI building blocks the accordion needs, each with a fallback for hosts that lack it."""

from __future__ import annotations

import importlib.util

from . import animatediff, paths


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
    from modules import ui_common

    return ui_common.create_refresh_button(
        dropdown, lambda: None, lambda: {"choices": list_discriminators()}, f"{tab}_motionprompt_refresh"
    )


def list_discriminators() -> list[str]:
    paths.ensure_models_dir()
    return paths.list_discriminators()


def status_line() -> str | None:
    """Shown in the accordion when guidance cannot run on this WebUI at all (known at UI build time)."""
    if _is_forge():
        return ("Guidance is unavailable on Forge: it has no AnimateDiff and samples in inference mode. "
                "The MotionPrompt tab (discriminator training) works.")
    if not animatediff.installed():
        return "Install sd-webui-animatediff: MotionPrompt guides AnimateDiff videos."
    return None


def _is_forge() -> bool:
    return importlib.util.find_spec("modules_forge") is not None
