"""Flow as colour (Baker et al., Middlebury): hue = direction, saturation = speed, white = still.

The colour wheel has 55 steps (red-yellow 15, yellow-green 6, green-cyan 4, cyan-blue 11, blue-magenta
13, magenta-red 6) as in the Middlebury ``flowToColor`` code, so pictures read like every flow paper's:
rightward motion is red, downward orange-yellow, leftward cyan, upward blue-violet.
"""

from __future__ import annotations

import numpy as np


def colour_wheel() -> np.ndarray:
    """[55, 3] float RGB in [0, 255]."""
    segments = [(15, (255, 0, 0), (255, 255, 0)), (6, (255, 255, 0), (0, 255, 0)), (4, (0, 255, 0), (0, 255, 255)),
                (11, (0, 255, 255), (0, 0, 255)), (13, (0, 0, 255), (255, 0, 255)), (6, (255, 0, 255), (255, 0, 0))]
    rows = []
    for n, start, end in segments:
        t = np.arange(n)[:, None] / n
        rows.append(np.asarray(start, float) * (1 - t) + np.asarray(end, float) * t)
    return np.concatenate(rows)


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
    several fields with one fixed value. Non-finite vectors are drawn black.
    """
    f = _as_hw2(flow)
    u, v = f[..., 0], f[..., 1]
    bad = ~np.isfinite(u) | ~np.isfinite(v)
    u = np.where(bad, 0.0, u)
    v = np.where(bad, 0.0, v)
    mag = np.hypot(u, v)
    scale = float(mag.max()) if max_magnitude is None else float(max_magnitude)
    rad = np.clip(mag / scale, 0, None) if scale > 0 else np.zeros_like(mag)
    wheel = colour_wheel()
    n = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi  # (-1, 1]
    fk = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(fk).astype(int)
    k1 = (k0 + 1) % n
    w = (fk - k0)[..., None]
    col = ((1 - w) * wheel[k0] + w * wheel[k1]) / 255.0
    inside = (rad <= 1)[..., None]
    col = np.where(inside, 1 - rad[..., None] * (1 - col), col * 0.75)  # beyond max: darker
    out = np.floor(255 * col + 0.5).clip(0, 255).astype(np.uint8)
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
