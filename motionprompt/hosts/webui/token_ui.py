"""The amortized token in the accordion: the mode and token controls. No torch here (the gradio-4 UI tests
run without torch): token files are told apart by their safetensors header alone (``embeddings``).
"""

from __future__ import annotations

from .args import MODES
from .embeddings import list_tokens

FIELDS = ("mode", "token")
MODE_HINT = ("per-sample: the paper's inner loop on each clip; amortized: the picked token appended at every step, "
             "no inner loop and no discriminator (the same as typing its name); hybrid: the inner loop starting "
             "from the picked token")


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
