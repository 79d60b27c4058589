"""Writing clips and records. GIF via Pillow (in every WebUI venv); no ffmpeg needed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def save_gif(frames, path: str | os.PathLike, fps: float = 8.0) -> Path:
    """uint8 frames [F, H, W, 3] (numpy or torch) -> looping GIF."""
    from PIL import Image

    arr = np.asarray(frames.cpu() if hasattr(frames, "cpu") else frames, dtype=np.uint8)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected [F, H, W, 3] uint8 frames, got {arr.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in arr]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return path


def load_gif(path: str | os.PathLike) -> np.ndarray:
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])


def save_json(data, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
    return path
