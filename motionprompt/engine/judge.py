"""The discriminator's judgement of frame pairs: the one place that turns frames into D's verdict.

Guidance, the same-pairs probe, bench, the demo, ``metrics`` and ``score`` all ask the same question
(how real does the motion between these frames look to D?); they all go through here so the flow is
normalised the same way, the frames are decoded the same way, and a "D score" is one number.

The D score of a clip (``clip_probs``/``d_score``): mean sigmoid(D) over up to ``pairs`` evenly spaced
(t, t + gap) pairs of the frames as they are (the flow backend brings them to its working size, as it
does for guidance's decoded frames); gap 1 unless asked, a (min, max) range cycles through its gaps.
Evenly spaced rather than random pairs: deterministic without a seed, every part of the clip counts.
"""

from __future__ import annotations

import numpy as np
import torch

from .losses import normalize_flow


def pair_flow(flow, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Flow a->b as a fraction of the frame (what D was trained on and the loss terms expect), float32."""
    return normalize_flow(flow(a, b).float())


def pair_logits(disc, flow, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """D's logits for frame pairs a->b; ``disc`` is the torch module (``Discriminator.model``)."""
    return disc(pair_flow(flow, a, b)).float()


def decode_pairs(host, x0: torch.Tensor, pairs, one_at_a_time: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode only the frames the pairs use (once each) and return the (earlier, later) batches.

    ``one_at_a_time`` (the low-memory path): one decoder call per frame, so with the decoder's blocks
    checkpointed only one frame's block is ever being computed or recomputed."""
    idx = sorted({i for p in pairs for i in p})
    where = {f: k for k, f in enumerate(idx)}
    if one_at_a_time:
        frames = torch.cat([host.decode(x0[i : i + 1]).float() for i in idx])
    else:
        frames = host.decode(x0[idx]).float()
    return frames[[where[p[0]] for p in pairs]], frames[[where[p[1]] for p in pairs]]


def x0_pair_logits(guide, x0: torch.Tensor, pairs) -> torch.Tensor:
    """Decode the pair frames of latents ``x0`` with the guide's host and score them (float32, no autocast)."""
    a, b = decode_pairs(guide.host, x0, pairs)
    with torch.autocast(a.device.type, enabled=False):
        return pair_logits(guide.disc, guide.flow, a, b)


def plan_pairs(n: int, pairs: int = 16, gap: int | tuple[int, int] = 1) -> list[tuple[int, int]]:
    """The D score's pairs for a clip of ``n`` frames (see the module doc)."""
    lo, hi = (gap, gap) if isinstance(gap, int) else (int(gap[0]), int(gap[1]))
    hi = max(1, min(hi, n - 1))
    lo = max(1, min(lo, hi))
    starts = np.unique(np.linspace(0, n - 1 - hi, min(pairs, n - hi)).round().astype(int))
    gaps = [lo + k % (hi - lo + 1) for k in range(len(starts))]
    return [(int(s), int(s) + g) for s, g in zip(starts, gaps, strict=True)]


def clip_probs(frame, plan, disc, flow, device="cpu", batch: int = 8) -> torch.Tensor:
    """sigmoid(D) per planned pair; ``frame(i)`` gives RGB uint8 [H, W, 3]; ``disc`` a ``Discriminator``."""
    from ..files.video import to_tensor

    disc.check_flow(flow.settings)
    probs = []
    with torch.no_grad():
        for k in range(0, len(plan), batch):
            chunk = plan[k : k + batch]
            a = to_tensor(np.stack([frame(p[0]) for p in chunk])).to(device)
            b = to_tensor(np.stack([frame(p[1]) for p in chunk])).to(device)
            probs.append(torch.sigmoid(pair_logits(disc.model, flow, a, b)).cpu())
    return torch.cat(probs)


def d_score(frames, disc, *, flow=None, flow_weights=(), pairs: int = 16, gap: int | tuple[int, int] = 1,
            batch: int = 8, device: str = "cpu") -> float:
    """The D score of RGB uint8 frames [F, H, W, 3]; ``disc`` a ``Discriminator`` or a checkpoint path."""
    from ..disc.checkpoint import Discriminator, load_discriminator
    from ..flow.registry import build_flow

    if not isinstance(disc, Discriminator):
        disc = load_discriminator(disc, device)
    if flow is None:
        flow = build_flow(disc.flow, list(flow_weights)).to(device)
    video = np.asarray(frames)
    return float(clip_probs(lambda i: video[i], plan_pairs(len(video), pairs, gap), disc, flow, device, batch).mean())
