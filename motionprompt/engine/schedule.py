"""Which sampling steps optimize, and which frame pairs each inner iteration scores."""

from __future__ import annotations

import math

import torch

from .config import GuidanceConfig


def window(cfg: GuidanceConfig, total_steps: int) -> tuple[int, int]:
    """[first, end) step indices of the optimization window; step 0 is the initial noise."""
    first = math.ceil(cfg.window_start * total_steps - 1e-9)
    end = math.ceil(cfg.window_end * total_steps - 1e-9)
    return first, max(first, end)


def phase(cfg: GuidanceConfig, step: int, total_steps: int) -> str:
    """'before', 'window' or 'after' for a sampling step."""
    first, end = window(cfg, total_steps)
    if step < first:
        return "before"
    return "window" if step < end else "after"


def optimizes(cfg: GuidanceConfig, step: int, total_steps: int) -> bool:
    first, _ = window(cfg, total_steps)
    return phase(cfg, step, total_steps) == "window" and (step - first) % cfg.every_k == 0


def guided_steps(cfg: GuidanceConfig, total_steps: int) -> list[int]:
    return [i for i in range(total_steps) if optimizes(cfg, i, total_steps)]


def sample_pairs(cfg: GuidanceConfig, n_frames: int, step: int, iteration: int) -> list[tuple[int, int]]:
    """Random (earlier, later) frame pairs, reproducible from (seed, step, iteration) alone.

    Seeding per call (not one running generator) keeps pairs identical whatever else consumed
    randomness, e.g. an interrupted iteration or a host that skips steps.
    """
    if n_frames < 2:
        raise ValueError("MotionPrompt needs at least 2 frames to compute flow")
    gen = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + step * 1_009 + iteration)
    gap_hi = min(cfg.gap_max, n_frames - 1)
    gap_lo = min(cfg.gap_min, gap_hi)
    pairs = []
    for _ in range(cfg.pairs):
        gap = int(torch.randint(gap_lo, gap_hi + 1, (1,), generator=gen))
        a = int(torch.randint(0, n_frames - gap, (1,), generator=gen))
        pairs.append((a, a + gap))
    return pairs
