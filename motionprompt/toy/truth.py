"""Ground-truth measures of a toy-world clip: where the captioned object is, and how it moves.

They work on pixels only (uint8 [F, H, W, 3]), so the same code measures real world clips and the toy
model's samples. Objects are found by hue: backgrounds are low-saturation and every palette colour is a
distinct saturated hue, so each saturated pixel is assigned to its nearest palette colour.
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass

import numpy as np

from .world import COLOURS, DIRECTIONS, RADIUS, SPEEDS, parse_caption

_PALETTE_HUES = {name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] * 360 for name, rgb in COLOURS.items()}
SATURATION_MIN = 0.4
VALUE_MIN = 0.25


def hue_sat_val(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 [..., 3] -> hue in degrees, saturation, value (vectorised HSV)."""
    rgb = frames.astype(np.float64) / 255.0
    mx, mn = rgb.max(-1), rgb.min(-1)
    delta = mx - mn
    sat = np.where(mx > 0, delta / np.maximum(mx, 1e-12), 0.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.maximum(delta, 1e-12)
    hue = np.where(mx == r, np.mod((g - b) / safe, 6), np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4))
    return hue * 60.0, sat, mx


def colour_masks(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean [F, H, W] mask per palette colour: saturated pixels whose nearest palette hue is it."""
    hue, sat, val = hue_sat_val(frames)
    names = list(_PALETTE_HUES)
    ref = np.array([_PALETTE_HUES[n] for n in names])
    dist = np.abs((hue[..., None] - ref + 180.0) % 360.0 - 180.0)
    nearest = dist.argmin(-1)
    coloured = (sat >= SATURATION_MIN) & (val >= VALUE_MIN)
    return {n: coloured & (nearest == i) for i, n in enumerate(names)}


@dataclass
class ObjectTrack:
    colour: str
    area: np.ndarray  # pixels per frame [F]
    centre: np.ndarray  # [F, 2] (x, y) pixels, NaN where not visible
    visible: np.ndarray  # bool [F]
    colour_purity: float  # fraction of saturated pixels that are the captioned colour


def area_range(size: int) -> tuple[float, float]:
    """Pixel area a visible object may cover at this frame size: half the smallest shape (2.5 r^2 at the
    smallest radius) to twice the largest (a circle at the largest radius)."""
    return 0.5 * 2.5 * (RADIUS[0] * size) ** 2, 2.0 * np.pi * (RADIUS[1] * size) ** 2


def _largest_blob(mask: np.ndarray) -> tuple[np.ndarray, int]:
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask), 0
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == k, int(stats[k, cv2.CC_STAT_AREA])


def track(frames: np.ndarray, colour: str) -> ObjectTrack:
    """The captioned colour's largest connected blob per frame. Visible = one object-sized blob holding
    most of that colour (scattered coloured noise is not an object)."""
    masks = colour_masks(frames)
    mask = masks[colour]
    lo, hi = area_range(frames.shape[1])
    ys, xs = np.mgrid[0 : frames.shape[1], 0 : frames.shape[2]] + 0.5
    area = np.zeros(len(frames))
    centre = np.full((len(frames), 2), np.nan)
    visible = np.zeros(len(frames), bool)
    for t in range(len(frames)):
        blob, a = _largest_blob(mask[t])
        total = int(mask[t].sum())
        area[t] = a
        if a:
            centre[t] = [(blob * xs).sum() / a, (blob * ys).sum() / a]
        visible[t] = lo <= a <= hi and a >= 0.6 * total
    centre[~visible] = np.nan
    saturated = sum(m.sum() for m in masks.values())
    purity = float(mask.sum() / saturated) if saturated else 0.0
    return ObjectTrack(colour, area, centre, visible, purity)


@dataclass
class ClipTruth:
    """What a clip shows about its captioned object (first object of the caption)."""

    visible_frac: float  # frames where the object is visible
    direction_ok: bool  # moved the captioned way, by at least half the captioned distance
    displacement: float  # along the captioned direction, pixels (first -> last visible frame)
    off_axis: float  # |displacement| across it, pixels
    speed_error: float  # |displacement - expected| / expected
    area_cv: float  # std / mean of the area over visible frames (shape drift, flicker)
    jerk: float  # mean |second difference| of the centre, pixels per frame^2 (stutter)
    colour_purity: float

    def to_dict(self) -> dict:
        return {k: (float(v) if not isinstance(v, bool) else v) for k, v in asdict(self).items()}


def clip_truth(frames: np.ndarray, caption: str) -> ClipTruth:
    obj = parse_caption(caption)[0]
    tr = track(frames, obj["colour"])
    n, size = frames.shape[0], frames.shape[1]
    vis = np.flatnonzero(tr.visible)
    dx, dy = DIRECTIONS.get(obj.get("direction", "right"), (0, 0))
    expected = SPEEDS[obj.get("speed", "slowly")] * (n - 1) * size
    if obj.get("motion", "moving") == "spinning":
        expected = 0.0
    if len(vis) >= 2:
        delta = tr.centre[vis[-1]] - tr.centre[vis[0]]
        along = float(delta[0] * dx + delta[1] * dy)
        across = float(abs(delta[0] * dy - delta[1] * dx))
        c = tr.centre[vis]
        jerk = float(np.abs(np.diff(c, n=2, axis=0)).sum(1).mean()) if len(vis) >= 3 else float("nan")
        area = tr.area[vis]
        area_cv = float(area.std() / max(area.mean(), 1e-9))
    else:
        along, across, jerk, area_cv = 0.0, 0.0, float("nan"), float("nan")
    moving = obj.get("motion", "moving") in ("moving", "accelerating")
    ok = (along >= 0.5 * expected and along > across) if moving else True
    speed_error = abs(along - expected) / expected if expected > 0 else float("nan")
    return ClipTruth(float(tr.visible.mean()), bool(ok and len(vis) >= 2), along, across, speed_error,
                     area_cv, jerk, tr.colour_purity)


def summarize(truths: list[ClipTruth]) -> dict:
    """The quality gate's numbers over a set of clips."""
    if not truths:
        return {}
    arr = lambda k: np.array([getattr(t, k) for t in truths], dtype=np.float64)  # noqa: E731
    return {
        "clips": len(truths),
        "visible_frames": float(arr("visible_frac").mean()),
        "direction_ok": float(arr("direction_ok").mean()),
        "speed_error_median": float(np.nanmedian(arr("speed_error"))) if np.isfinite(arr("speed_error")).any() else None,
        "area_cv_mean": float(np.nanmean(arr("area_cv"))) if np.isfinite(arr("area_cv")).any() else None,
        "jerk_mean": float(np.nanmean(arr("jerk"))) if np.isfinite(arr("jerk")).any() else None,
        "colour_purity": float(arr("colour_purity").mean()),
    }
