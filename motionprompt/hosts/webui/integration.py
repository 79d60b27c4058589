"""Everything registered with the WebUI at import: the CFG callback, settings, infotext paste, XYZ axes.

Registered once per script load; ``on_script_unloaded`` drops live runs so "Reload UI" leaves
nothing behind (A1111 clears the callback lists itself before re-importing scripts).
"""

from __future__ import annotations

import logging

from . import amortized, logs, token_job
from . import run as runs
from .args import INFOTEXT_KEY, MODES, WEBUI_PRESETS, XYZ_ATTR, MotionPromptArgs

log = logging.getLogger("motionprompt")

SECTION = ("motionprompt", "MotionPrompt")


def register() -> None:
    from modules import script_callbacks

    logs.setup()  # "MotionPrompt" once per console line
    try:
        script_callbacks.on_cfg_denoiser(runs.on_cfg_denoiser, name="motionprompt")
    except TypeError:  # A1111 < 1.9 has no callback names
        script_callbacks.on_cfg_denoiser(runs.on_cfg_denoiser)
    try:  # the tab's token training runs inside a carrier generation (token_job)
        script_callbacks.on_cfg_denoiser(token_job.on_cfg_denoiser, name="motionprompt_token")
    except TypeError:
        script_callbacks.on_cfg_denoiser(token_job.on_cfg_denoiser)
    script_callbacks.on_ui_settings(on_ui_settings)
    script_callbacks.on_infotext_pasted(on_infotext_pasted)
    script_callbacks.on_before_ui(add_xyz_axes)
    script_callbacks.on_script_unloaded(runs.clear)
    script_callbacks.on_ui_tabs(_ui_tabs)
    amortized.register()  # issue 15: the amortized-token mode's CFG callback, Mode/Token XYZ axes, unload cleanup


def _ui_tabs():
    from .train_tab import on_ui_tabs

    return on_ui_tabs()


def on_ui_settings() -> None:
    import gradio as gr
    from modules import shared

    def add(key, default, label, component=None, args=None, info=None):
        opt = shared.OptionInfo(default, label, component, args, section=SECTION)
        if info and hasattr(opt, "info"):
            opt = opt.info(info)
        shared.opts.add_option(key, opt)

    add("motionprompt_allow_download", False, "Allow downloading RAFT weights from download.pytorch.org",
        gr.Checkbox, None, "off: put the .pth files in models/MotionPrompt/flow yourself (--motionprompt-offline forces off)")
    add("motionprompt_report", True, "Measure guided clips (temporal metrics in the infotext, HTML report beside the outputs)",
        gr.Checkbox, None, "about a second per clip on CPU")
    add("motionprompt_report_unguided", False, "Also measure AnimateDiff clips made with MotionPrompt off",
        gr.Checkbox, None, "for A/B comparisons by hand; XYZ plots with a MotionPrompt axis always measure both")


def on_infotext_pasted(infotext: str, params: dict) -> None:
    """``MotionPrompt: "preset: fast, lr: 0.02"`` -> one ``MotionPrompt <field>`` per control: the preset's
    values plus the listed ones, so no control keeps a stale value that would then count as an override."""
    value = params.get(INFOTEXT_KEY)
    if not isinstance(value, str):
        return
    for key, field_value in MotionPromptArgs.paste_values(value).items():
        params[f"{INFOTEXT_KEY} {key}"] = field_value


#: (axis label, args field, type); the apply writes a *new* dict on p (xyz shallow-copies p per cell)
XYZ_AXES = [
    ("Enabled", "enabled", "bool"),
    ("Discriminator", "discriminator", str),
    ("Preset", "preset", str),
    ("Mode", "mode", str),
    ("Token", "token", str),
    ("Inner iterations", "inner_iters", int),
    ("Learning rate", "lr", float),
    ("Window start", "window_start", float),
    ("Window end", "window_end", float),
    ("Every k-th step", "every_k", int),
    ("λ discriminator", "lambda_disc", float),
    ("λ flow TV", "lambda_tv", float),
    ("Frame pairs", "pairs", int),
    ("Learnable tokens", "n_tokens", int),
]


def _apply(field):
    def apply(p, value, _xs):
        setattr(p, XYZ_ATTR, {**(getattr(p, XYZ_ATTR, None) or {}), field: value})

    return apply


def add_xyz_axes() -> None:
    try:
        from modules import scripts

        xyz = next((d.module for d in scripts.scripts_data
                    if d.script_class.__module__ in ("xyz_grid.py", "scripts.xyz_grid")), None)
        if xyz is None:
            return
        present = {getattr(o, "label", None) for o in xyz.axis_options}
        for label, field, kind in XYZ_AXES:
            full = f"[MotionPrompt] {label}"
            if full in present:
                continue  # UI reload
            if kind == "bool":
                xyz.axis_options.append(xyz.AxisOption(full, str, _apply(field), choices=xyz.boolean_choice(reverse=True)))
            elif field == "preset":
                xyz.axis_options.append(xyz.AxisOption(full, str, _apply(field), choices=lambda: list(WEBUI_PRESETS)))
            elif field == "discriminator":
                from .widgets import list_discriminators

                xyz.axis_options.append(xyz.AxisOption(full, str, _apply(field), choices=list_discriminators))
            elif field == "mode":  # plain, amortized, hybrid, per-sample side by side
                xyz.axis_options.append(xyz.AxisOption(full, str, _apply(field), choices=lambda: list(MODES)))
            elif field == "token":
                from .embeddings import list_tokens

                xyz.axis_options.append(xyz.AxisOption(full, str, _apply(field), choices=list_tokens))
            else:
                xyz.axis_options.append(xyz.AxisOption(full, kind, _apply(field)))
    except Exception as exc:  # an XYZ change upstream must not break the UI
        log.warning("MotionPrompt: could not add XYZ axes: %s", exc)
