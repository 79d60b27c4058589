"""Does the model listen to the direction word? ``toy-check --probe``.

Sampling tells whether clips move the prompted way, but not why they do not: the model may not read the
word, or may read it and still not draw it. The probe asks the first question directly: real clips noised to
a few timesteps, the clean clip the model predicts with the true caption vs the same caption with the
opposite direction. A model that uses the word predicts the real clip better with the true caption,
most clearly at high noise, where the noisy clip itself says least about where the object goes.
"""

from __future__ import annotations

import numpy as np
import torch

from .model import ToyParts
from .protocol import all_captions, seeds

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
TIMESTEPS = (200, 400, 600, 800, 999)


def opposite(caption: str) -> str:
    words = caption.split()
    hits = [i for i, w in enumerate(words) if w in OPPOSITE]
    if len(hits) != 1:
        raise ValueError(f"caption {caption!r} names no single direction")
    words[hits[0]] = OPPOSITE[words[hits[0]]]
    return " ".join(words)


@torch.no_grad()
def direction_probe(parts: ToyParts, n_clips: int = 16, timesteps=TIMESTEPS) -> dict:
    """Per timestep: mean x0 error with the true / opposite / empty caption, and the share of clips the true
    caption predicts better than the opposite one (0.5 = the word is ignored)."""
    from .sample import encode_prompts, real_clip
    from .train import _frames_tensor, encode_latents

    caps = all_captions()
    caps = [caps[(i * 7) % len(caps)] for i in range(n_clips)]  # every direction, speed and colour
    sd = seeds("gate", n_clips)
    z = encode_latents(parts, _frames_tensor([real_clip(c, s, size=parts.arch.size) for c, s in zip(caps, sd, strict=True)]))
    conds = {k: encode_prompts(parts, p) for k, p in
             (("true", caps), ("opposite", [opposite(c) for c in caps]), ("empty", [""] * n_clips))}
    return probe_rows(parts.unet, parts.scheduler(), z, conds, timesteps)


@torch.no_grad()
def probe_rows(unet, sched, z: torch.Tensor, conds: dict[str, torch.Tensor], timesteps=TIMESTEPS) -> dict:
    """The probe's numbers for clean latents ``z`` [B, C, F, h, w] and caption encodings by name."""
    from ..engine.diffusion import predicted_x0
    from ..hosts.diffusers.sampler import initial_noise
    from .train import noised

    ptype = sched.config.prediction_type
    noise = initial_noise(tuple(z.shape), 12345).to(z.dtype)
    rows = []
    for t in timesteps:
        ab = sched.alphas_cumprod[t].to(z.dtype)
        noisy = noised(z, noise, ab)
        err = {}
        for key, cond in conds.items():
            out = unet(noisy, torch.tensor(t), encoder_hidden_states=cond.repeat_interleave(z.shape[2], dim=0)).sample
            err[key] = (predicted_x0(noisy, out, ab, ptype) - z).pow(2).mean(dim=(1, 2, 3, 4)).numpy()
        rows.append({
            "t": t, "snr": float(ab / (1 - ab)),
            **{f"x0_error_{k}": float(v.mean()) for k, v in err.items()},
            "true_better": float(np.mean(err["true"] < err["opposite"])),
            "relative_gap": float((err["opposite"].mean() - err["true"].mean()) / max(err["true"].mean(), 1e-12)),
        })
    return {"clips": int(z.shape[0]), "prediction_type": ptype, "rows": rows}


def format_probe(result: dict) -> str:
    lines = [f"direction probe ({result['clips']} real clips, {result['prediction_type']}): x0 error by caption",
             f"{'t':>5} {'SNR':>8} {'true':>8} {'opposite':>9} {'empty':>8} {'gap':>7} {'true better':>12}"]
    for r in result["rows"]:
        lines.append(f"{r['t']:>5} {r['snr']:>8.4f} {r['x0_error_true']:>8.4f} {r['x0_error_opposite']:>9.4f} "
                     f"{r['x0_error_empty']:>8.4f} {r['relative_gap']:>+7.1%} {r['true_better']:>12.0%}")
    return "\n".join(lines)
