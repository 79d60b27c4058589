"""The shipped toy model's card: data, architecture, training, quality-gate numbers, samples, loss curve.

Written by ``toy-check --card`` from the model file's metadata, the gate it just ran and the training
log, so every number on the card comes from one run of code in this repository.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def loss_png(csv_path: Path) -> bytes | None:
    from matplotlib.figure import Figure

    from ..files.plots import png_bytes

    if not csv_path.is_file():
        return None
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    fig = Figure(figsize=(6, 2.6), dpi=100)
    axes = fig.subplots(1, 2)
    for ax, phase, title in ((axes[0], "0", "VAE (L1 + L2 + KL)"), (axes[1], "1", "UNet (weighted MSE; objective changes in the notes)")):
        pts = [(float(r["step"]), float(r["loss"])) for r in rows if r["phase"].startswith(phase)]
        if not pts:
            continue
        x, y = np.array(pts).T
        k = max(1, len(y) // 100)
        ax.plot(x, y, lw=0.4, alpha=0.4)
        if len(y) > k:
            ax.plot(x[k - 1 :], np.convolve(y, np.ones(k) / k, mode="valid"), lw=1.2)
        ax.set_title(title, fontsize=8)
        ax.set_yscale("log")
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return png_bytes(fig)


def grid_clip(clips: list[np.ndarray], cols: int = 4) -> np.ndarray:
    """Clips [F, H, W, 3] tiled into one clip, 2-px gaps."""
    f, h, w = clips[0].shape[:3]
    rows = -(-len(clips) // cols)
    out = np.full((f, rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for i, c in enumerate(clips):
        r, k = divmod(i, cols)
        out[:, r * (h + 2) : r * (h + 2) + h, k * (w + 2) : k * (w + 2) + w] = c
    return out


def write_card(folder: Path, meta: dict, arch: dict, gate: dict, captions: list[str], clips: list[np.ndarray],
               train_csv: Path | None = None) -> Path:
    from ..files.atomic import atomic_write, write_text
    from ..files.video import save_gif

    folder = Path(folder)
    save_gif(np.repeat(np.repeat(grid_clip(clips), 2, axis=1), 2, axis=2), folder / "samples.gif", fps=8)
    png = loss_png(train_csv) if train_csv else None
    if png:
        atomic_write(folder / "loss.png", lambda tmp: Path(tmp).write_bytes(png))
    m, r = gate["model"], gate["real"]

    def row(k, fmt=".3f"):
        mv, rv = m.get(k), r.get(k)
        return f"| {k} | {'-' if mv is None else format(mv, fmt)} | {'-' if rv is None else format(rv, fmt)} |"

    learn = meta.get("learning") or {}
    v = arch.get("prediction_type") == "v_prediction"
    frozen = learn.get("text_encoder") == "frozen"
    lines = [
        "# Toy text-to-video model (MotionPrompt's toy world)", "",
        "A small AnimateDiff-family model trained from scratch on the procedural world of `motionprompt/toy/world.py` "
        "(level `toy`: one solid object — circle, square or triangle; red, yellow, green or blue — moving left, right, "
        "up or down, slowly or quickly, on a plain grey background; 32×32 px, 16 frames; 96 captions such as "
        "\"a red circle moving left slowly\"). It exists so that MotionPrompt guidance can be measured through the "
        "production code path without downloadable weights. It knows no other words.", "",
        "## Architecture",
        f"- UNetMotionModel, block channels {arch.get('unet_channels')}, motion layers in every block, cross-attention "
        f"width {arch.get('text_width')}",
        f"- AutoencoderKL, channels {arch.get('vae_channels')} (4× down: 8×8×4 latents), latents normalised "
        f"(shift {arch.get('shift_factor', 0):.4f}, scale {arch.get('scaling_factor', 1):.4f})",
        f"- CLIPTextModel, {arch.get('text_layers')} layers × {arch.get('text_width')}, word tokenizer "
        f"(vocabulary {arch.get('vocab_size')}, chunk {arch.get('max_length')})"
        + (f", frozen at its random initialisation (seed {meta.get('seed')}), as SD keeps CLIP fixed" if frozen else ""),
        "- DDPM linear betas 0.00085–0.012 (AnimateDiff's), " + (
            "v-prediction on those betas rescaled to zero terminal SNR (trailing timesteps: sampling starts from pure "
            "noise)" if v else "epsilon prediction") + "; sampled with DDIM",
        "", "## Training",
        f"- VAE {meta.get('vae_steps')} steps, then the UNet{'' if frozen else ' + text encoder'} "
        f"{meta.get('unet_steps')} steps × {meta.get('batch')} clips (clips rendered on the fly from seeds, 10 % "
        f"caption dropout, min-SNR-5 weighting, AdamW, EMA {meta.get('ema_decay')}), "
        f"{meta.get('train_seconds', 0) / 3600:.1f} h on 2 CPU cores",
        *([f"- final settings: {', '.join(f'{k} {val}' for k, val in learn.items())}"] if learn else []),
        *([f"- changes during the run: {'; '.join(meta['notes'])}"] if meta.get("notes") else []),
        f"- recent training loss {meta.get('loss_recent'):.4f}" + ("; curve: `loss.png`" if png else "")
        if meta.get("loss_recent") is not None else "- recent training loss: -",
        "", f"## Quality gate (plain DDIM {gate['steps']} steps, CFG {gate['cfg_scale']}, {m['clips']} samples, "
        "one per caption, unseen seeds)",
        "| measure | model | real clips |", "|---|---|---|",
        row("visible_frames", ".1%"), row("direction_ok", ".1%"), row("speed_error_median"), row("area_cv_mean"),
        row("jerk_mean"), row("colour_purity"), "",
        f"Gate (object visible in ≥ 95 % of frames, prompted direction in ≥ 80 % of clips): "
        f"**{'passed' if gate['passed'] else 'not passed'}**.", "",
        "`samples.gif`: " + "; ".join(f"{i + 1}. {c}" for i, c in enumerate(captions)),
    ]
    return write_text(folder / "MODEL_CARD.md", "\n".join(lines) + "\n")


REFERENCE_PROMPTS = ("a red circle moving right slowly", "a blue square moving up quickly",
                     "a yellow triangle moving left quickly", "a green square moving down slowly")
REFERENCE_SEED = 1 << 44  # outside every other seed range


def reference_stats(parts, steps: int = 10) -> dict:
    """A small fixed sample's statistics, written beside the shipped weights and re-checked by the tests:
    if loading, the architecture or the sampler drift, these numbers move."""
    from .sample import sample_batch
    from .truth import clip_truth

    clips = sample_batch(parts, list(REFERENCE_PROMPTS), [REFERENCE_SEED + i for i in range(len(REFERENCE_PROMPTS))],
                         steps=steps, cfg_scale=5.0)
    rows = []
    for prompt, c in zip(REFERENCE_PROMPTS, clips, strict=True):
        t = clip_truth(c, prompt)
        rows.append({"prompt": prompt, "mean_rgb": [float(v) for v in c.reshape(-1, 3).mean(0)],
                     "visible_frac": t.visible_frac, "displacement": t.displacement, "direction_ok": t.direction_ok})
    return {"steps": steps, "cfg_scale": 5.0, "seed": REFERENCE_SEED, "clips": rows}
