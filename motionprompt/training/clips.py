"""Discriminator training clips: find them in folders, count their frames, read the frames a pair needs.

A clip is a video file (OpenCV decodes mp4/webm/gif/avi/mov/mkv with its bundled FFmpeg) or a folder of
frame images, sorted by name with numbers compared as numbers (``f2`` before ``f10``). Folders are searched
recursively and hidden entries (``.cache`` ...) are ignored. A file that cannot be used is listed as
``Skipped(path, reason)`` instead of stopping a run that may have hundreds of good clips.

Finding clips only lists and ``stat``s files (cheap); frames are decoded when flows are computed, so a
run whose flows are all cached never decodes a video.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_EXTS = (".mp4", ".webm", ".gif", ".avi", ".mov", ".mkv", ".m4v")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
ANIMATEDIFF_OUTPUTS = "outputs/txt2img-images/AnimateDiff"  # where sd-webui-animatediff saves (relative to WebUI)


class ClipError(ValueError):
    """A clip that cannot be used; the message is the reason shown in the skip report."""


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str
    expected: bool = False  # nothing wrong: another copy of a video that is used (``one_per_video``)

    def to_dict(self) -> dict:
        return {"path": self.path, "reason": self.reason}


def skip_lines(skipped: list[Skipped]) -> list[str]:
    """``path: reason`` for each file that could not be used, and one line for the expected copies (AnimateDiff
    saves each video as GIF/MP4 *and* a frame folder: one line per pair would bury the real problems)."""
    lines = [f"{s.path}: {s.reason}" for s in skipped if not s.expected]
    copies = sum(s.expected for s in skipped)
    if copies:
        lines.append(f"{copies} video file(s) not used again: the same video as a frame folder or another format "
                     "that is used (each video counts once)")
    return lines


@dataclass(frozen=True)
class Clip:
    path: str  # the video file, or the folder of frames
    kind: str  # "video" | "frames"
    files: tuple[str, ...]  # the frame images in order (kind == "frames"), else (path,)
    signature: tuple  # ((name, bytes, mtime_ns), ...): changes whenever the content may have changed
    rel: str = ""  # path relative to the folder it was found in: seeds its pairs, so moving data keeps them

    @property
    def name(self) -> str:
        return Path(self.path).name


def natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _stat(path: str, name: str) -> tuple:
    st = os.stat(path)
    return (name, st.st_size, st.st_mtime_ns)


def _rel(path: str, root: str) -> str:
    rel = os.path.relpath(path, root)
    return Path(path).name if rel == "." else Path(rel).as_posix()


def _video_clip(path: str, root: str) -> Clip:
    return Clip(path, "video", (path,), (_stat(path, Path(path).name),), _rel(path, root))


def _frames_clip(folder: str, images: list[str], root: str) -> Clip:
    images = sorted(images, key=natural_key)
    files = tuple(os.path.join(folder, f) for f in images)
    sig = tuple(_stat(p, f) for p, f in zip(files, images, strict=True))
    return Clip(folder, "frames", files, sig, _rel(folder, root))


def find_clips(paths, exclude=()) -> tuple[list[Clip], list[Skipped]]:
    """Clips under the given folders (or single video files), recursively, in a stable order.

    ``exclude``: folders to leave out (the flow cache). Paths that do not exist, folders without any
    clip and frame folders holding a single image are reported as skipped; other files are ignored.
    """
    clips: list[Clip] = []
    skipped: list[Skipped] = []
    excluded = {os.path.realpath(p) for p in exclude}
    seen: set[str] = set()
    for root in paths:
        root = os.path.abspath(os.fspath(root))
        if os.path.isfile(root):
            if root.lower().endswith(VIDEO_EXTS):
                if root not in seen:
                    seen.add(root)
                    clips.append(_video_clip(root, root))
            else:
                skipped.append(Skipped(root, f"not a video file (expected one of {', '.join(VIDEO_EXTS)}) or a folder"))
            continue
        if not os.path.isdir(root):
            skipped.append(Skipped(root, "folder does not exist"))
            continue
        before = len(clips) + len(skipped)
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(
                (d for d in dirs if not d.startswith(".") and os.path.realpath(os.path.join(folder, d)) not in excluded),
                key=natural_key,
            )
            if folder in seen:
                continue
            seen.add(folder)
            files = [f for f in files if not f.startswith(".")]
            images = [f for f in files if f.lower().endswith(IMAGE_EXTS)]
            if len(images) == 1:
                skipped.append(Skipped(os.path.join(folder, images[0]), "a folder with a single frame image: need >= 2 frames"))
            elif images:
                clips.append(_frames_clip(folder, images, root))
            for f in sorted(files, key=natural_key):
                path = os.path.join(folder, f)
                if f.lower().endswith(VIDEO_EXTS) and path not in seen:  # a file given twice would leak into val
                    seen.add(path)
                    clips.append(_video_clip(path, root))
        if len(clips) + len(skipped) == before:
            skipped.append(Skipped(root, "no videos or folders of frame images in this folder"))
    return one_per_video(clips, skipped)


def clip_identity(clip: Clip) -> str:
    """One video saved in several forms shares a path stem: AnimateDiff writes ``00001-42.gif`` (and/or
    .mp4/.webm/.webp) beside the frame folder ``00001-42/`` (animatediff_output.py ``_save``)."""
    return clip.path if clip.kind == "frames" else os.path.splitext(clip.path)[0]


def one_per_video(clips: list[Clip], skipped: list[Skipped]) -> tuple[list[Clip], list[Skipped]]:
    """Keep one clip per video so it is counted once and cannot sit in training and validation at the same
    time; the lossless frame folder wins over encoded files, then the first format found."""
    kept: dict[str, Clip] = {}
    dropped: list[Clip] = []
    for clip in clips:
        key = clip_identity(clip)
        other = kept.get(key)
        if other is None:
            kept[key] = clip
        elif clip.kind == "frames" and other.kind != "frames":
            kept[key] = clip
            dropped.append(other)
        else:
            dropped.append(clip)
    by_key = {clip_identity(c): c for c in kept.values()}
    skipped = skipped + [Skipped(c.path, f"same video as {by_key[clip_identity(c)].path} (another format); used once",
                                 expected=True) for c in dropped]
    return [c for c in clips if kept.get(clip_identity(c)) is c], skipped


def count_frames(clip: Clip) -> int:
    """Frames that actually decode (container frame counts lie for truncated files, GIF and webm)."""
    if clip.kind == "frames":
        return len(clip.files)
    import cv2

    cap = cv2.VideoCapture(clip.path)
    if not cap.isOpened():
        raise ClipError("cannot be opened as a video (not a video, unsupported codec, or corrupt)")
    try:
        n = 0
        while cap.grab():
            n += 1
    finally:
        cap.release()
    if n == 0:
        raise ClipError("no frame could be decoded (corrupt or truncated?)")
    return n


def _resize_short(rgb: np.ndarray, short_side: int | None) -> np.ndarray:
    import cv2

    if not short_side:
        return rgb
    h, w = rgb.shape[:2]
    s = short_side / min(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.resize(rgb, size, interpolation=interp)


def read_frames(clip: Clip, indices, short_side: int | None = None) -> dict[int, np.ndarray]:
    """RGB uint8 frames {index: [H, W, 3]}, short side resized to ``short_side``; decodes sequentially once.

    Every frame is brought to the size of the first one read, so a frame folder with mixed sizes still
    gives pairs of equal shape. Raises ``ClipError`` when a needed frame cannot be read.
    """
    import cv2

    wanted = sorted({int(i) for i in indices})
    out: dict[int, np.ndarray] = {}
    if not wanted:
        return out
    if clip.kind == "frames":
        for i in wanted:
            bgr = cv2.imread(clip.files[i], cv2.IMREAD_COLOR)
            if bgr is None:
                raise ClipError(f"frame {Path(clip.files[i]).name} cannot be read as an image")
            out[i] = _resize_short(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), short_side)
    else:
        cap = cv2.VideoCapture(clip.path)
        if not cap.isOpened():
            raise ClipError("cannot be opened as a video (not a video, unsupported codec, or corrupt)")
        try:
            pending = set(wanted)
            for i in range(wanted[-1] + 1):
                if not cap.grab():
                    raise ClipError(f"decoding stopped at frame {i}, before frame {wanted[-1]}")
                if i in pending:
                    ok, bgr = cap.retrieve()
                    if not ok:
                        raise ClipError(f"frame {i} could not be decoded")
                    out[i] = _resize_short(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), short_side)
        finally:
            cap.release()
    first = out[wanted[0]]
    for i, f in out.items():
        if f.shape != first.shape:
            out[i] = cv2.resize(f, (first.shape[1], first.shape[0]), interpolation=cv2.INTER_AREA)
    return out


def sample_gap_pair(n: int, gap_min: int, gap_max: int, rng: np.random.Generator) -> tuple[int, int]:
    """(earlier, later) frame indices with gap in [gap_min, gap_max], like ``schedule.sample_pairs``."""
    hi = min(gap_max, n - 1)
    lo = min(gap_min, hi)
    gap = int(rng.integers(lo, hi + 1))
    a = int(rng.integers(0, n - gap))
    return a, a + gap


def random_crop(rng: np.random.Generator, crop_min: float) -> tuple[float, float, float]:
    """(side as a fraction of the short side, y and x position as fractions of the free room)."""
    return float(rng.uniform(crop_min, 1.0)), float(rng.random()), float(rng.random())


def crop_resize(frame: np.ndarray, crop: tuple[float, float, float], size: int) -> np.ndarray:
    """Square crop (see ``random_crop``) resized to size x size: the flow working resolution."""
    import cv2

    scale, fy, fx = crop
    h, w = frame.shape[:2]
    side = max(1, min(h, w, round(scale * min(h, w))))
    y0 = round(fy * (h - side))
    x0 = round(fx * (w - side))
    patch = frame[y0 : y0 + side, x0 : x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)
