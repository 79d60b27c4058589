"""The amortized token in the accordion: mode and token controls, the token list, XYZ axes. No torch here
(the UI thread lists files; the gradio-4 UI tests run without torch): token files are told apart by their
safetensors header alone.

Token files live where A1111 looks for embeddings (``--embeddings-dir``, default ``<data>/embeddings``), so
one file serves both ways of using it: typed by name in a prompt (A1111 loads it itself), or picked here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ...amortized import token_file
from .args import MODES

log = logging.getLogger("motionprompt")

FIELDS = ("mode", "token")
MODE_HINT = ("per-sample: the paper's inner loop on each clip; amortized: the picked token appended at every step, "
             "no inner loop and no discriminator (the same as typing its name); hybrid: the inner loop starting "
             "from the picked token")


def embeddings_dir() -> Path:
    from modules import paths, shared

    override = getattr(shared.cmd_opts, "embeddings_dir", None)
    return Path(override) if override else Path(paths.data_path) / "embeddings"


def list_tokens() -> list[str]:
    """MotionPrompt token files in the embeddings folder (other embeddings are not offered)."""
    root = embeddings_dir()
    if not root.is_dir():
        return []
    found = [p.relative_to(root).as_posix() for p in root.rglob(f"*{token_file.SUFFIX}")
             if ".tmp" not in p.name and token_file.is_token_file(p)]
    return sorted(found, key=str.lower)


def resolve_token(name: str) -> Path:
    """A name from the dropdown (relative to the embeddings folder) or an absolute path from the API."""
    path = Path(name)
    return path if path.is_absolute() else embeddings_dir() / name


def controls(tab: str) -> dict:
    """Mode and token controls (built inside the accordion); keys are ``MotionPromptArgs`` fields."""
    import gradio as gr
    from modules import ui_common

    with gr.Row():
        mode = gr.Radio(choices=list(MODES), value=MODES[0], label="Mode", elem_id=f"{tab}_motionprompt_mode",
                        info=MODE_HINT)
        choices = list_tokens()
        token = gr.Dropdown(choices=choices, value=choices[0] if choices else None, label="Token",
                            elem_id=f"{tab}_motionprompt_token", allow_custom_value=True,
                            info="amortized token (python -m motionprompt token-train) from the embeddings folder")
        ui_common.create_refresh_button(token, lambda: None, lambda: {"choices": list_tokens()},
                                        f"{tab}_motionprompt_token_refresh")
    return {"mode": mode, "token": token}


def _apply(field: str):
    from .script import XYZ_ATTR

    def apply(p, value, _xs):
        setattr(p, XYZ_ATTR, {**(getattr(p, XYZ_ATTR, None) or {}), field: value})

    return apply


def add_xyz_axes() -> None:
    """[MotionPrompt] Mode and [MotionPrompt] Token axes (plain, amortized, hybrid, per-sample side by side)."""
    try:
        from modules import scripts

        xyz = next((d.module for d in scripts.scripts_data
                    if d.script_class.__module__ in ("xyz_grid.py", "scripts.xyz_grid")), None)
        if xyz is None:
            return
        present = {getattr(o, "label", None) for o in xyz.axis_options}
        for label, field, choices in (("Mode", "mode", lambda: list(MODES)), ("Token", "token", list_tokens)):
            if f"[MotionPrompt] {label}" not in present:
                xyz.axis_options.append(xyz.AxisOption(f"[MotionPrompt] {label}", str, _apply(field), choices=choices))
    except Exception as exc:  # an XYZ change upstream must not break the UI
        log.warning("MotionPrompt: could not add the token XYZ axes: %s", exc)
