"""Score videos with a trained discriminator: mean "real motion" probability over random frame pairs.

The D score is ``judge``'s (the one ``metrics`` reports too): whole frames at their own size, flow
backend and working size from the checkpoint, flow normalized to a fraction of the frame. Useful to judge a discriminator
(held-out real clips should score high, generated and corrupted ones low) and to compare videos.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..disc.checkpoint import Discriminator, load_discriminator
from ..engine.judge import clip_probs, plan_pairs
from .clips import Clip, ClipError, count_frames, find_clips, read_frames


@dataclass
class VideoScore:
    path: str
    p_real: float | None  # mean sigmoid(D) over the pairs
    p_std: float | None  # spread over the pairs
    pairs: int
    frames: int
    error: str | None = None  # why the video was not scored


def score_clip(clip: Clip, disc: Discriminator, flow, pairs: int = 16, gap: int | tuple[int, int] = 1,
               device="cpu", batch: int = 16) -> VideoScore:
    """The D score (``judge``) of one clip, reading only the frames its pairs use."""
    try:
        n = count_frames(clip)
        if n < 2:
            raise ClipError(f"only {n} frame: need at least 2")
        plan = plan_pairs(n, pairs, gap)
        frames = read_frames(clip, [i for p in plan for i in p])
    except ClipError as exc:
        return VideoScore(clip.path, None, None, 0, 0, str(exc))
    p = clip_probs(frames.__getitem__, plan, disc, flow, device, batch).double()
    return VideoScore(clip.path, float(p.mean()), float(p.std()) if len(p) > 1 else 0.0, len(p), n)


def score_videos(paths, disc: Discriminator | str | os.PathLike, pairs: int = 16, gap: int | tuple[int, int] = 1,
                 flow=None, flow_weights=None, allow_download: bool = False, device="cpu",
                 progress=None, interrupted=None) -> list[VideoScore]:
    """Score every video (file, frame folder, or folder searched recursively) in ``paths``.

    ``disc``: a loaded ``Discriminator`` or a checkpoint path. ``flow``: a built estimator, else one is
    built from the checkpoint's flow settings. Unusable files come back with ``error`` set.
    ``progress(done, total, {"phase": "score", "video": name}, None)``; ``interrupted()`` stops early.
    """
    from ..flow.registry import build_flow

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
        out.append(score_clip(clip, disc, flow, pairs, gap, device))
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

