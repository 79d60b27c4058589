"""Writing clips and records. GIF via Pillow (in every WebUI venv); no ffmpeg needed."""

from __future__ import annotations

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


def read_video(path: str | os.PathLike, start: int = 0, max_frames: int | None = None,
               short_side: int | None = None) -> np.ndarray:
    """RGB uint8 [F, H, W, 3] via OpenCV (its wheels bundle FFmpeg); resized so the short side fits.

    Raises ``ValueError`` naming the file when it cannot be opened or holds no frames in range.
    """
    import cv2

    cap = cv2.VideoCapture(os.fspath(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}")
    try:
        if start:
            cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        frames = []
        while max_frames is None or len(frames) < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if short_side:
                h, w = rgb.shape[:2]
                s = short_side / min(h, w)
                rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            frames.append(rgb)
    finally:
        cap.release()
    if not frames:
        raise ValueError(f"no frames read from {path} (from frame {start})")
    return np.stack(frames)


def to_tensor(frames: np.ndarray):
    """uint8 [F, H, W, 3] -> float [F, 3, H, W] in [-1, 1] (the engine's frame convention)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(x) -> np.ndarray:
    """float [F, 3, H, W] in [-1, 1] -> uint8 [F, H, W, 3] (the inverse of ``to_tensor``, clamped)."""
    return ((x.detach().float() + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()
