"""Flow as colour (Baker et al., Middlebury): hue = direction, saturation = speed, white = still.

The colours are torchvision's ``flow_to_image`` (the Middlebury 55-step wheel), so pictures read like every
flow paper's: rightward motion is red, downward orange-yellow, leftward cyan, upward blue-violet. What it
lacks and this module adds: a scale you choose (several fields on one scale), numpy/[H,W,2] input, and
black for non-finite vectors.
"""

from __future__ import annotations

import numpy as np


def _as_hw2(flow) -> np.ndarray:
    if hasattr(flow, "detach"):
        flow = flow.detach().float().cpu().numpy()
    f = np.asarray(flow, dtype=np.float64)
    if f.ndim == 4 and f.shape[0] == 1:
        f = f[0]
    if f.ndim == 3 and f.shape[0] == 2 and f.shape[-1] != 2:
        f = f.transpose(1, 2, 0)
    if f.ndim != 3 or f.shape[-1] != 2:
        raise ValueError(f"flow must be [2, H, W] or [H, W, 2], got {np.shape(flow)}")
    return f


def flow_to_rgb(flow, max_magnitude: float | None = None) -> np.ndarray:
    """Flow [2,H,W] / [H,W,2] (numpy or torch, any units) -> uint8 [H, W, 3].

    ``max_magnitude``: the speed drawn fully saturated; default the largest in the field, so compare
    several fields with one fixed value. Faster vectors get the rim colour, darkened; non-finite vectors
    are drawn black.
    """
    import torch
    from torchvision.utils import flow_to_image

    f = _as_hw2(flow).copy()
    bad = ~np.isfinite(f).all(-1)
    f[bad] = 0.0
    mag = np.hypot(f[..., 0], f[..., 1])
    scale = float(mag.max()) if max_magnitude is None else float(max_magnitude)
    unit = f / scale if scale > 0 else np.zeros_like(f)  # 1 = fully saturated
    rad = np.hypot(unit[..., 0], unit[..., 1])
    beyond = rad > 1
    unit[beyond] /= rad[beyond][:, None]
    # flow_to_image scales by the largest vector it sees: a sentinel column holding one vector of length 1
    # pins that scale to ours, so several fields drawn with one max_magnitude share one colour scale
    t = torch.from_numpy(np.ascontiguousarray(unit.transpose(2, 0, 1))).float()
    t = torch.cat([t, t.new_zeros(2, t.shape[1], 1)], dim=2)
    t[0, 0, -1] = 1.0
    out = flow_to_image(t)[:, :, :-1].permute(1, 2, 0).numpy().copy()
    out[beyond] = (out[beyond] * 0.75).astype(np.uint8)  # beyond max: darker
    out[bad] = 0
    return out


def wheel_legend(size: int = 64) -> np.ndarray:
    """A disc showing every direction at full speed out to the rim: the key to ``flow_to_rgb``."""
    c = (size - 1) / 2
    ys, xs = np.mgrid[0:size, 0:size].astype(float)
    flow = np.stack([(xs - c) / c, (ys - c) / c], -1)
    img = flow_to_rgb(flow, max_magnitude=1.0)
    img[np.hypot(xs - c, ys - c) > c] = 255
    return img
