"""Small line charts drawn with OpenCV, so reports get PNG plots without matplotlib in a WebUI venv."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]  # RGB


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    return [lo + (hi - lo) * i / n for i in range(n + 1)]


def _label(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.2f}"


def line_chart(series: dict[str, tuple], title: str = "", xlabel: str = "", ylim: tuple | None = None,
               size: tuple[int, int] = (520, 300)) -> np.ndarray:
    """series: name -> (xs, ys). Returns RGB uint8 [H, W, 3]; non-finite points are dropped."""
    import cv2

    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 52, 12, 28, 40
    pts = {k: (np.asarray(x, float), np.asarray(y, float)) for k, (x, y) in series.items()}
    pts = {k: (x[np.isfinite(y)], y[np.isfinite(y)]) for k, (x, y) in pts.items()}
    xs = np.concatenate([x for x, _ in pts.values()] or [np.zeros(1)])
    ys = np.concatenate([y for _, y in pts.values()] or [np.zeros(1)])
    x0, x1 = (float(xs.min()), float(xs.max())) if xs.size else (0.0, 1.0)
    y0, y1 = ylim if ylim is not None else ((float(ys.min()), float(ys.max())) if ys.size else (0.0, 1.0))
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def px(x, y):
        u = left + (np.asarray(x) - x0) / (x1 - x0) * (w - left - right)
        v = h - bottom - (np.asarray(y) - y0) / (y1 - y0) * (h - top - bottom)
        return np.stack([u, v], -1).round().astype(np.int32)

    font, grey = cv2.FONT_HERSHEY_SIMPLEX, (110, 110, 110)
    for t in _ticks(y0, y1):
        (u, v), = px([x0], [t])
        cv2.line(img, (left, int(v)), (w - right, int(v)), (230, 230, 230), 1)
        cv2.putText(img, _label(t), (4, int(v) + 4), font, 0.38, grey, 1, cv2.LINE_AA)
    for t in _ticks(x0, x1):
        (u, v), = px([t], [y0])
        cv2.putText(img, _label(t), (int(u) - 10, h - bottom + 16), font, 0.38, grey, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (w - right, h - bottom), grey, 1)
    cv2.putText(img, title, (left, 18), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, xlabel, (w // 2 - 4 * len(xlabel), h - 8), font, 0.42, grey, 1, cv2.LINE_AA)
    for i, (name, (x, y)) in enumerate(pts.items()):
        colour = COLOURS[i % len(COLOURS)]
        if x.size > 1:
            cv2.polylines(img, [px(x, y).reshape(-1, 1, 2)], False, colour, 2, cv2.LINE_AA)
        elif x.size == 1:
            cv2.circle(img, tuple(int(c) for c in px(x, y)[0]), 3, colour, -1)
        ly = top + 14 + 16 * i
        cv2.line(img, (w - right - 150, ly - 4), (w - right - 130, ly - 4), colour, 2)
        cv2.putText(img, name, (w - right - 125, ly), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def save_png(img: np.ndarray, path: str | os.PathLike) -> Path:
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(os.fspath(path), cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")
    return path


def grid(tiles: list[np.ndarray], labels: list[str], cols: int, tile: int = 128) -> np.ndarray:
    """Labelled mosaic of RGB images (each resized to ``tile`` x ``tile``)."""
    import cv2

    rows = -(-len(tiles) // cols)
    out = np.full((rows * (tile + 18), cols * tile, 3), 255, np.uint8)
    for i, (t, label) in enumerate(zip(tiles, labels, strict=True)):
        r, c = divmod(i, cols)
        y = r * (tile + 18)
        out[y + 18 : y + 18 + tile, c * tile : (c + 1) * tile] = cv2.resize(t, (tile, tile), interpolation=cv2.INTER_AREA)
        cv2.putText(out, label[:20], (c * tile + 3, y + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return out
