"""The MotionPrompt accordion of txt2img/img2img. Portable across gradio 3.41 (A1111) and 4.40 (Forge):
only ``gr.update``, no ``.style()``, no ``_js``, valid keyword arguments only.

``build`` returns the components in ``MotionPromptArgs`` field order, which is the positional order
of ``Script.process(p, *args)`` and of the API's ``args`` list.
"""

from __future__ import annotations

from ...engine.config import COND_AFTER, DISC_LOSS_FORMS, MEMORY_MODES, OPTIMIZERS, X0_MODES
from . import token_ui
from .args import FLOW_AUTO, INFOTEXT_KEY, TOKEN_LEVELS, WEBUI_PRESETS, MotionPromptArgs

FLOW_CHOICES = [FLOW_AUTO, "raft_small", "raft_large", "lk_pyramid"]

#: name -> (label, kind, extra, hint). kind: slider (min, max, step) | number | dropdown | text | checkbox
CONTROLS: dict[str, tuple] = {
    "inner_iters": ("Inner iterations (K)", "slider", (1, 10, 1), "gradient steps on the tokens per guided step (paper: 3)"),
    "window_start": ("Window start", "slider", (0.0, 1.0, 0.01), "first guided step as a fraction of all steps (paper: 0.16 = step 4 of 25)"),
    "window_end": ("Window end", "slider", (0.0, 1.0, 0.01), "guidance stops at this fraction of the steps (paper: 0.6 = step 15 of 25)"),
    "every_k": ("Every k-th step", "slider", (1, 5, 1), "optimize every k-th step of the window, reuse the tokens in between"),
    "lr": ("Learning rate", "number", None, "token step size (Adam; 'nsgd' scales it by the token norm)"),
    "optimizer": ("Optimizer", "dropdown", list(OPTIMIZERS), "fresh Adam per step (paper lab's choice) or normalized SGD"),
    "n_tokens": ("Learnable tokens", "slider", (1, 4, 1), "appended after the prompt inside its 75-token chunk (paper: 1)"),
    "init_word": ("Init word", "text", None, "word whose embedding starts the tokens (paper: authentic)"),
    "pairs": ("Frame pairs", "slider", (1, 4, 1), "random frame pairs scored per iteration; only their frames are decoded"),
    "gap_min": ("Min frame gap", "slider", (1, 8, 1), "smallest distance between the two frames of a pair"),
    "gap_max": ("Max frame gap", "slider", (1, 15, 1), "largest distance (gaps > 1 expose flicker adjacent frames hide)"),
    "lambda_disc": ("λ discriminator", "number", None, "weight of log(1 - D(flow))"),
    "lambda_tv": ("λ flow TV", "number", None, "weight of flow total variation (normalized units); higher = smoother, less dynamic"),
    "lambda_drift": ("λ token drift", "number", None, "weight of ||T - T0||², keeps the tokens near the init word"),
    "disc_loss": ("Discriminator loss", "dropdown", list(DISC_LOSS_FORMS), "log(1-D) as in the paper, or -log D"),
    "x0_mode": ("x0 for the loss", "dropdown", list(X0_MODES), "conditional branch (paper) or the CFG-combined prediction"),
    "cond_after": ("After the window", "dropdown", list(COND_AFTER), "restore the original prompt (paper) or keep the optimized tokens"),
    "flow_backend": ("Flow", "dropdown", FLOW_CHOICES, "always the discriminator's own backend; another one is refused"),
    "flow_size": ("Flow resolution (0 = discriminator's)", "slider", (0, 512, 8),
                  "another size than the discriminator was trained at runs, with a note in the result"),
    "flow_iters": ("Flow iterations (0 = discriminator's)", "slider", (0, 32, 1),
                   "RAFT refinement iterations / LK warps per level; a mismatch is noted in the result"),
    "seed": ("Pair seed (-1 = image seed)", "number", None, "seed of the random frame pairs"),
    "token_level": ("Token level", "dropdown", list(TOKEN_LEVELS), "input = through CLIP like textual inversion; output = fallback"),
    "memory": ("Memory", "dropdown", list(MEMORY_MODES),
               "auto = the fastest path that fits the free GPU memory; balanced recomputes the UNet, low the VAE "
               "decoder too (16x512²: ~29 / 11 / 7 GiB, docs/memory.md)"),
}
assert set(CONTROLS) | {"enabled", "discriminator", "preset", *token_ui.FIELDS} == set(MotionPromptArgs.field_names())


def preset_values(name: str) -> dict:
    """Every advanced control's value under a preset (what the Preset radio writes into them)."""
    return MotionPromptArgs.ui_values(name)


def _first(choices: list[str]) -> str | None:
    return choices[0] if choices else None


def build(tab: str, list_discriminators, refresh_button, accordion, status: str | None, default_discriminator=_first):
    """Build the accordion; returns (components in field order, infotext fields)."""
    import gradio as gr

    defaults = preset_values("paper")
    comps: dict[str, object] = {}
    with accordion(False, label="MotionPrompt", elem_id=f"{tab}_motionprompt") as enabled:
        comps["enabled"] = enabled
        if status:
            gr.HTML(f"<p class='motionprompt-status'>{status}</p>", elem_id=f"{tab}_motionprompt_status")
        with gr.Row():
            choices = list_discriminators()
            comps["discriminator"] = gr.Dropdown(
                choices=choices, value=default_discriminator(choices), label="Discriminator",
                elem_id=f"{tab}_motionprompt_discriminator",
                info="flow discriminator (.safetensors) from models/MotionPrompt; train one in the MotionPrompt tab",
            )
            refresh_button(comps["discriminator"], tab)
            comps["preset"] = gr.Radio(choices=list(WEBUI_PRESETS), value="paper", label="Preset",
                                       elem_id=f"{tab}_motionprompt_preset",
                                       info="paper: K=3 on steps 4-14 of 25; fast: K=1 every 2nd step. "
                                            "Advanced values equal to the preset's follow it (also on an XYZ axis)")
        comps.update(token_ui.controls(tab))  # issue 15: mode (per-sample / amortized / hybrid) and token file
        with gr.Accordion("Advanced", open=False, elem_id=f"{tab}_motionprompt_advanced"):
            for name, (label, kind, extra, hint) in CONTROLS.items():
                comps[name] = _control(gr, f"{tab}_motionprompt_{name}", label, kind, extra, hint, defaults[name])
    advanced = list(CONTROLS)
    # .input, not .change: only a user's click rewrites the advanced values; a pasted infotext sets the radio
    # and the values together, and .change would overwrite the pasted values with the preset's
    comps["preset"].input(fn=lambda name: [gr.update(value=v) for v in _ordered(preset_values(name), advanced)],
                          inputs=[comps["preset"]], outputs=[comps[n] for n in advanced])
    ordered = [comps[name] for name in MotionPromptArgs.field_names()]
    # an amortized job without a discriminator measured no D score: its paste clears the pick, so the pasted job
    # is the same job (the infotext leaves out what a mode does not use: MotionPromptArgs.applies)
    files = {"discriminator": _paste_file(gr, "discriminator", list_discriminators,
                                          clear=lambda d: d.get(f"{INFOTEXT_KEY} mode") == "amortized"),
             "token": _paste_file(gr, "token", token_ui.list_tokens)}
    infotext = [(enabled, lambda d: INFOTEXT_KEY in d)]
    infotext += [(comps[n], files.get(n, f"{INFOTEXT_KEY} {n}")) for n in MotionPromptArgs.field_names() if n != "enabled"]
    for c in ordered:
        c.do_not_save_to_config = c is not comps["discriminator"] and c is not enabled
    return ordered, infotext


def _paste_file(gr, name: str, list_files, clear=lambda params: False):
    """Paste into a file dropdown: a file added after start-up is not among its choices yet, and a dropdown that
    started empty takes no pasted string at all (the WebUI converts with ``type(value)``): set both. Without a
    file in the infotext the dropdown stays as it is, or is emptied where ``clear(params)``."""
    key = f"{INFOTEXT_KEY} {name}"

    def paste(params: dict):
        value = params.get(key)
        if not value:
            return gr.update(value=None) if INFOTEXT_KEY in params and clear(params) else None
        return gr.update(value=value, choices=sorted({*list_files(), value}, key=str.lower))

    return paste


def _ordered(values: dict, names: list[str]) -> list:
    return [values[n] for n in names]


def _control(gr, elem_id, label, kind, extra, hint, value):
    if kind == "slider":
        lo, hi, step = extra
        return gr.Slider(minimum=lo, maximum=hi, step=step, value=value, label=label, info=hint, elem_id=elem_id)
    if kind == "number":
        return gr.Number(value=value, label=label, info=hint, elem_id=elem_id)
    if kind == "dropdown":
        return gr.Dropdown(choices=extra, value=value, label=label, info=hint, elem_id=elem_id)
    if kind == "checkbox":
        return gr.Checkbox(value=bool(value), label=label, info=hint, elem_id=elem_id)
    return gr.Textbox(value=value, label=label, info=hint, elem_id=elem_id, lines=1)
