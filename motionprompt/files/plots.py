"""Charts and labelled image mosaics for the reports, drawn with matplotlib.

Everything goes through ``matplotlib.figure.Figure`` and the Agg canvas: no pyplot, so no global figure
state, nothing to close, and safe in the WebUI's worker threads. matplotlib is a gradio dependency, so
every WebUI venv has it (``install.py`` fills the gap elsewhere). Images are RGB uint8 ``[H, W, 3]``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]  # RGB
DPI = 100


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (figures for gradio's Plot, no display), or None where matplotlib is
    missing (the caller shows no plot)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def figure(width_px: int, height_px: int):
    """A matplotlib ``Figure`` of exactly ``width_px`` x ``height_px`` pixels on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def to_rgb(fig) -> np.ndarray:
    """Render a figure made by ``figure`` to an RGB uint8 array."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def png_bytes(fig, **savefig) -> bytes:
    """A figure as PNG bytes (for HTML reports that embed or write them)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig)
    return buf.getvalue()


def line_chart(series: dict[str, tuple], title: str = "", xlabel: str = "", ylim: tuple | None = None,
               size: tuple[int, int] = (520, 300)) -> np.ndarray:
    """series: name -> (xs, ys). Returns RGB uint8 [H, W, 3]; non-finite points are dropped."""
    w, h = size
    fig = figure(w, h)
    ax = fig.add_axes((52 / w, 40 / h, 1 - 64 / w, 1 - 68 / h))
    for i, (name, (x, y)) in enumerate(series.items()):
        x, y = np.asarray(x, float), np.asarray(y, float)
        keep = np.isfinite(y)
        colour = np.asarray(COLOURS[i % len(COLOURS)]) / 255
        # one point has no line to draw: a marker instead
        ax.plot(x[keep], y[keep], color=colour, lw=2, label=name, marker="o" if keep.sum() == 1 else None, ms=4)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=9, loc="left")
    ax.set_xlabel(xlabel, fontsize=8, labelpad=1)
    ax.tick_params(labelsize=7, colors="0.35")
    ax.grid(True, color="0.9", lw=0.8)
    if series:
        ax.legend(fontsize=7, loc="upper right", frameon=False)
    return to_rgb(fig)


def save_png(img: np.ndarray, path: str | os.PathLike) -> Path:
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(os.fspath(path), cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")
    return path


def grid(tiles: list[np.ndarray], labels: list[str], cols: int, tile: int = 128) -> np.ndarray:
    """Labelled mosaic of RGB images (each resized to ``tile`` x ``tile``, placed pixel for pixel)."""
    import cv2

    rows = -(-len(tiles) // cols)
    band = 18  # label strip above each tile
    height = rows * (tile + band)
    fig = figure(cols * tile, height)
    for i, (t, label) in enumerate(zip(tiles, labels, strict=True)):
        r, c = divmod(i, cols)
        top = r * (tile + band)
        img = cv2.resize(np.ascontiguousarray(t), (tile, tile), interpolation=cv2.INTER_AREA)
        fig.figimage(img, xo=c * tile, yo=height - top - band - tile, origin="upper")  # offsets from bottom left
        fig.text((c * tile + 3) / fig.bbox.width, 1 - (top + 13) / height, label[:20], fontsize=7)
    return to_rgb(fig)
