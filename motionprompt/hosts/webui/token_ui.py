"""The amortized token in the accordion: the mode and token controls. No torch here (the gradio-4 UI tests
run without torch): token files are told apart by their safetensors header alone (``embeddings``).
"""

from __future__ import annotations

from . import widgets
from .args import MODES
from .embeddings import embeddings_dir, list_tokens

FIELDS = ("mode", "token")
MODE_HINT = ("per-sample: the paper's inner loop on each clip; amortized: the picked token appended at every step, "
             "no inner loop and no discriminator (the same as typing its name); hybrid: the inner loop starting "
             "from the picked token")


def controls(tab: str) -> dict:
    """Mode and token controls (built inside the accordion); keys are ``MotionPromptArgs`` fields."""
    import gradio as gr

    with gr.Row():
        mode = gr.Radio(choices=list(MODES), value=MODES[0], label="Mode", elem_id=f"{tab}_motionprompt_mode",
                        info=MODE_HINT)
        choices = list_tokens()
        token = gr.Dropdown(choices=choices, value=newest_token(choices), label="Token",
                            elem_id=f"{tab}_motionprompt_token", allow_custom_value=True,
                            info="amortized token (python -m motionprompt token-train) from the embeddings folder")
        widgets.refresh_keeping(token, list_tokens, newest_token, f"{tab}_motionprompt_token_refresh")
    from .token_export import DROPDOWNS

    DROPDOWNS[tab] = token  # the tab's token training refreshes it when it exports
    return {"mode": mode, "token": token}


def newest_token(choices: list[str]) -> str | None:
    """The only token file, or the newest (as the discriminator dropdown starts on the newest file)."""
    return widgets.newest(choices, embeddings_dir())
