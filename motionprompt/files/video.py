"""Writing clips and records. GIF via Pillow (in every WebUI venv); no ffmpeg needed. Every writer is atomic."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FRAME_FORMATS = ("npy", "png")  # lossless frames beside a GIF (generate --frames-out)


def save_gif(frames, path: str | os.PathLike, fps: float = 8.0) -> Path:
    """uint8 frames [F, H, W, 3] (numpy or torch) -> looping GIF."""
    from PIL import Image

    # imported when writing: its import reads the umask, and engine/judge imports this module in worker threads
    from .atomic import atomic_write

    arr = np.asarray(frames.cpu() if hasattr(frames, "cpu") else frames, dtype=np.uint8)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected [F, H, W, 3] uint8 frames, got {arr.shape}")
    images = [Image.fromarray(f) for f in arr]
    return atomic_write(path, lambda tmp: images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                                                         duration=round(1000 / fps), loop=0))


def save_frames(frames, path: str | os.PathLike, kind: str) -> Path:
    """The exact uint8 frames [F, H, W, 3], atomically: ``npy`` -> ``<path>.npy`` (one array), ``png`` -> the
    folder ``<path>/`` of numbered frames ``0000.png``, ... (a frame folder, as ``train`` reads clips)."""
    from PIL import Image

    from .atomic import atomic_write, atomic_write_dir

    arr = _frames_array(frames)
    path = Path(path)
    if kind == "npy":
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save would add .npy to the temp name
                np.save(f, arr, allow_pickle=False)

        return atomic_write(path.with_name(path.name + ".npy"), write)
    if kind == "png":
        def fill(folder: Path) -> None:
            for i, frame in enumerate(arr):
                Image.fromarray(frame).save(folder / f"{i:04d}.png", format="PNG")

        return atomic_write_dir(path, fill)
    raise ValueError(f"frame format must be one of {FRAME_FORMATS}, got {kind!r}")


def _frames_array(frames) -> np.ndarray:
    arr = np.asarray(frames.cpu() if hasattr(frames, "cpu") else frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected [F, H, W, 3] uint8 frames, got {arr.shape} {arr.dtype}")
    return arr


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
