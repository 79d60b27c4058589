"""Score videos with a trained discriminator: mean "real motion" probability over random frame pairs.

Frames are treated exactly as guidance treats decoded frames: whole frame, flow backend and working
size from the checkpoint, flow normalized to a fraction of the frame. Useful to judge a discriminator
(held-out real clips should score high, generated and corrupted ones low) and to compare videos.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from .checkpoint import Discriminator, load_discriminator
from .losses import normalize_flow
from .train_data import Clip, ClipError, count_frames, find_clips, read_frames, sample_gap_pair
from .video_io import to_tensor


@dataclass
class VideoScore:
    path: str
    p_real: float | None  # mean sigmoid(D) over the pairs
    p_std: float | None  # spread over the pairs
    pairs: int
    frames: int
    error: str | None = None  # why the video was not scored


def _gap_from(disc: Discriminator) -> tuple[int, int]:
    s = (disc.training or {}).get("settings", {})
    return int(s.get("gap_min", 1)), int(s.get("gap_max", 4))


def score_clip(clip: Clip, disc: Discriminator, flow, pairs: int = 16, gap: tuple[int, int] | None = None,
               seed: int = 0, device="cpu", batch: int = 16) -> VideoScore:
    gap = gap or _gap_from(disc)
    try:
        n = count_frames(clip)
        if n < 2:
            raise ClipError(f"only {n} frame: need at least 2")
        rng = np.random.default_rng([seed, zlib.crc32(clip.rel.encode())])
        plan = [sample_gap_pair(n, gap[0], gap[1], rng) for _ in range(pairs)]
        frames = read_frames(clip, [i for p in plan for i in p], disc.flow.size)
    except ClipError as exc:
        return VideoScore(clip.path, None, None, 0, 0, str(exc))

    def tensor(i: int) -> torch.Tensor:
        return to_tensor(frames[i][None])[0]

    probs = []
    with torch.no_grad():
        for k in range(0, len(plan), batch):
            chunk = plan[k : k + batch]
            a = torch.stack([tensor(p[0]) for p in chunk]).to(device)
            b = torch.stack([tensor(p[1]) for p in chunk]).to(device)
            logits = disc.model(normalize_flow(flow(a, b).float()))
            probs.append(torch.sigmoid(logits.float()).cpu())
    p = torch.cat(probs).double()
    return VideoScore(clip.path, float(p.mean()), float(p.std()) if len(p) > 1 else 0.0, len(p), n)


def score_videos(paths, disc: Discriminator | str | os.PathLike, pairs: int = 16, gap: tuple[int, int] | None = None,
                 seed: int = 0, flow=None, flow_weights=None, allow_download: bool = False, device="cpu",
                 progress=None, interrupted=None) -> list[VideoScore]:
    """Score every video (file, frame folder, or folder searched recursively) in ``paths``.

    ``disc``: a loaded ``Discriminator`` or a checkpoint path. ``flow``: a built estimator, else one is
    built from the checkpoint's flow settings. Unusable files come back with ``error`` set.
    ``progress(done, total, {"phase": "score", "video": name}, None)``; ``interrupted()`` stops early.
    """
    from .flow import build_flow

    if not isinstance(disc, Discriminator):
        disc = load_discriminator(disc, device)
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    clips, skipped = find_clips(paths)
    if flow is None:
        flow = build_flow(disc.flow, flow_weights, allow_download).to(device).eval()
    out = [VideoScore(s.path, None, None, 0, 0, s.reason) for s in skipped]
    for i, clip in enumerate(clips):
        if interrupted is not None and interrupted():
            break
        out.append(score_clip(clip, disc, flow, pairs, gap, seed, device))
        if progress is not None:
            progress(i + 1, len(clips), {"phase": "score", "video": clip.name}, None)
    return out


def format_scores(scores: list[VideoScore], root: str | None = None) -> str:
    """A text table, best first; unscored videos at the end with the reason."""
    def name(p: str) -> str:
        try:
            rel = os.path.relpath(p, root or os.getcwd())
        except ValueError:  # another drive on Windows
            return p
        return p if rel.startswith("..") else rel

    ok = sorted((s for s in scores if s.p_real is not None), key=lambda s: -s.p_real)
    bad = [s for s in scores if s.p_real is None]
    lines = [f"{'p(real)':>8} {'± std':>7} {'pairs':>5} {'frames':>6}  video"]
    lines += [f"{s.p_real:8.4f} {s.p_std:7.4f} {s.pairs:5d} {s.frames:6d}  {name(s.path)}" for s in ok]
    lines += [f"{'-':>8} {'':>7} {'':>5} {'':>6}  {name(s.path)}  (skipped: {s.error})" for s in bad]
    if ok:
        mean = sum(s.p_real for s in ok) / len(ok)
        lines.append(f"mean p(real) over {len(ok)} video(s): {mean:.4f}" + (f"; {len(bad)} skipped" if bad else ""))
    elif not scores:
        lines.append("no videos found")
    return "\n".join(lines)

