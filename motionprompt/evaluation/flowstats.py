"""An FVD-like number without a pretrained video network: Fréchet distance on weight-free flow statistics.

Each clip becomes a short vector of motion statistics from OpenCV DIS flow between consecutive frames
(speed, its spread over time and space, flow change between pairs, direction coherence, frame difference,
warp error). A set of clips is summarised by the mean and covariance of those vectors, and two sets are
compared with the Fréchet distance of the two Gaussians, as FVD does with I3D features. Features are
standardised by the *reference* (real) set's spread first, so every statistic counts in units of natural
variation and the number does not depend on pixel units.
"""

from __future__ import annotations

import numpy as np

FEATURES = ("speed", "speed_spread_t", "speed_p95", "flow_change", "coherence", "frame_diff", "warp_error")
ANALYSIS_SIDE = 64  # DIS needs more than 32 px to resolve small objects; smaller clips are upscaled


def resize_short_side(frames: np.ndarray, side: int) -> np.ndarray:
    """uint8 [F, H, W, 3] with the short side at ``side`` (bilinear up, area down; unchanged when equal)."""
    import cv2

    h, w = frames.shape[1:3]
    scale = side / min(h, w)
    if scale == 1:
        return frames
    size = (round(w * scale), round(h * scale))
    inter = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
    return np.stack([cv2.resize(f, size, interpolation=inter) for f in frames])


def flow_features(frames: np.ndarray) -> np.ndarray:
    """uint8 [F, H, W, 3] -> float vector in ``FEATURES`` order (speeds in px of a 64-px short side)."""

    from ..flow.dis import dis_flow
    from .metrics import warp

    video = resize_short_side(np.asarray(frames), ANALYSIS_SIDE)
    f32 = video.astype(np.float32)
    flows = [dis_flow(video[i], video[i + 1]) for i in range(len(video) - 1)]
    mags = [np.linalg.norm(f, axis=-1) for f in flows]
    speed_t = np.array([m.mean() for m in mags])
    coherence = np.mean([np.linalg.norm(f.reshape(-1, 2).mean(0)) / max(m.mean(), 1e-6) for f, m in zip(flows, mags, strict=True)])
    change = np.mean([np.abs(flows[i + 1] - flows[i]).mean() for i in range(len(flows) - 1)]) if len(flows) > 1 else 0.0
    frame_diff = np.mean([np.abs(f32[i + 1] - f32[i]).mean() for i in range(len(f32) - 1)])
    warp_err = np.mean([np.abs(f32[i] - warp(f32[i + 1], flows[i])).mean() for i in range(len(flows))])
    return np.array([speed_t.mean(), speed_t.std(), np.percentile(np.concatenate([m.ravel() for m in mags]), 95),
                     change, coherence, frame_diff, warp_err], dtype=np.float64)


def frechet_distance(a, b, cov_a=None, cov_b=None, moments: bool = False) -> float:
    """Fréchet distance between Gaussians: ``|mu_a - mu_b|^2 + Tr(Ca + Cb - 2 (Ca Cb)^1/2)``.

    ``a``, ``b``: feature matrices [N, D] (or with ``moments=True`` the means, with ``cov_a``/``cov_b``).
    """
    from scipy import linalg

    if moments:
        mu_a, mu_b = np.asarray(a, float), np.asarray(b, float)
        ca, cb = np.asarray(cov_a, float), np.asarray(cov_b, float)
    else:
        a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
        mu_a, mu_b = a.mean(0), b.mean(0)
        ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ca, cb = np.atleast_2d(ca), np.atleast_2d(cb)
    covmean = linalg.sqrtm(ca @ cb)
    if not np.isfinite(covmean).all():  # singular product: regularise as the FID reference code does
        eps = np.eye(len(ca)) * 1e-6
        covmean = linalg.sqrtm((ca + eps) @ (cb + eps))
    covmean = np.real(covmean)
    return float(np.square(mu_a - mu_b).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(covmean))


def standardised_distance(reference: np.ndarray, other: np.ndarray) -> float:
    """Fréchet distance after z-scoring both sets with the reference set's mean and spread."""
    ref = np.asarray(reference, float)
    mu, sd = ref.mean(0), ref.std(0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    return frechet_distance((ref - mu) / sd, (np.asarray(other, float) - mu) / sd)
