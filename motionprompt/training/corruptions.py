"""Synthetic negatives: real clips made temporally wrong in the ways generated videos go wrong.

No generated videos at hand is the common case when training a first discriminator, so "fake" flows
can be made from real clips. Each corruption is a frame-index mapping (which source frame is shown at
each output position) plus an optional per-frame transform; a training pair is then sampled from the
corrupted sequence with the same gap range as real pairs. A pair that a mapping leaves looking exactly
like a real pair (no transform, source gap within the gap range in either direction; time reversal is
an augmentation of real flow) is redrawn, so every synthetic sample really is corrupted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..files.video import to_tensor, to_uint8


@dataclass(frozen=True)
class Corruption:
    name: str
    help: str
    sequence: Callable[[int, int, np.random.Generator], np.ndarray]  # (n, gap_max, rng) -> source indices
    transform: Callable[[torch.Tensor, np.random.Generator], torch.Tensor] | None = None  # one frame [3,H,W]


def _identity(n: int, gap_max: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n)


def _shuffle(n: int, gap_max: int, rng: np.random.Generator) -> np.ndarray:
    window = min(n, max(8, 2 * gap_max + 2))
    start = int(rng.integers(0, n - window + 1))
    return start + rng.permutation(window)


def _jump(n: int, gap_max: int, rng: np.random.Generator) -> np.ndarray:
    step = int(rng.integers(2, 2 * gap_max + 3))
    start = int(rng.integers(0, max(1, n - step)))
    return np.arange(start, n, step)


def _stutter(n: int, gap_max: int, rng: np.random.Generator) -> np.ndarray:
    hold = int(rng.integers(2, 5))  # each shown frame held `hold` times, then `hold` frames skipped
    return (np.arange(n) // hold) * hold


def _flicker(frame: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Exposure and white-balance change of one frame (frames in [-1, 1])."""
    offset = float(rng.uniform(0.06, 0.2)) * float(rng.choice([-1.0, 1.0]))
    gains = torch.from_numpy(1.0 + rng.uniform(-0.12, 0.12, size=3)).to(frame).view(3, 1, 1)
    return ((frame + 1) * gains - 1 + offset).clamp(-1, 1)


def _jitter(frame: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Small random warp of one frame: a global shift plus a smooth local field, 1-3 % of the frame."""
    from ..flow.lk import warp

    _, h, w = frame.shape
    amp = float(rng.uniform(0.01, 0.03)) * min(h, w)
    coarse = torch.from_numpy(rng.normal(size=(1, 2, 3, 3))).float()
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    shift = torch.from_numpy(rng.normal(size=(1, 2, 1, 1))).float()
    field = (field + shift) * (amp / 1.5)
    return warp(frame.unsqueeze(0).float(), field.to(frame.device))[0].to(frame.dtype)


CORRUPTIONS: dict[str, Corruption] = {}


def register(c: Corruption) -> Corruption:
    CORRUPTIONS[c.name] = c
    return c


register(Corruption("shuffle", "frames of a short window in random order", _shuffle))
register(Corruption("jump", "every k-th frame only (k = 2 .. 2*gap_max+2): motion too large for the gap", _jump))
register(Corruption("stutter", "each frame held 2-4 times then as many skipped: frozen pairs and jumps", _stutter))
register(Corruption("flicker", "per-frame brightness and colour changes", _identity, _flicker))
register(Corruption("jitter", "small random per-frame shifts and smooth warps", _identity, _jitter))


def parse_corruptions(spec) -> list[str]:
    """"shuffle,jump", ["flicker"], "all" or "" -> validated names in registry order, no duplicates."""
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [s.strip().lower() for s in items if s and s.strip()]
    if "all" in names:
        return list(CORRUPTIONS)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown synthetic negative(s) {unknown}; choose from {', '.join(CORRUPTIONS)} or 'all'")
    return [n for n in CORRUPTIONS if n in names]


def plan_pair(name: str, n: int, gap_min: int, gap_max: int, rng: np.random.Generator,
              tries: int = 32) -> tuple[int, int] | None:
    """Source frame indices (a, b) of one corrupted pair, or None when this clip is too short for it."""
    c = CORRUPTIONS[name]
    for _ in range(tries):
        seq = c.sequence(n, gap_max, rng)
        if len(seq) < 2:
            return None
        hi = min(gap_max, len(seq) - 1)
        lo = min(gap_min, hi)
        g = int(rng.integers(lo, hi + 1))
        i = int(rng.integers(0, len(seq) - g))
        a, b = int(seq[i]), int(seq[i + g])
        if c.transform is not None or not gap_min <= abs(b - a) <= gap_max:
            return a, b
    return None


def apply_transform(name: str, frame: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    c = CORRUPTIONS[name]
    return frame if c.transform is None else c.transform(frame, rng)


def corrupt_clip(name: str, frames: np.ndarray, seed: int = 0, gap_max: int = 4) -> np.ndarray:
    """A whole corrupted clip (uint8 [F, H, W, 3] -> same), for previews, demos and tests."""
    rng = np.random.default_rng(seed)
    c = CORRUPTIONS[name]
    seq = c.sequence(len(frames), gap_max, rng)
    out = frames[seq]
    if c.transform is None:
        return out
    y = torch.stack([c.transform(f, rng) for f in to_tensor(out)])
    return to_uint8(y)
