"""Our differentiable flows against OpenCV DIS on real clips: agreement (EPE) and time per pair."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..files.sample_clips import CLIPS, clip_path
from ..files.video import read_video, to_tensor
from ..flow.dis import dis_flow
from ..flow.registry import build_flow
from ..flow.settings import FlowSettings


def compare_on_clips(backend: str = "lk_pyramid", size: int = 128, iters: int = 6, pairs: int = 8,
                     gap: int = 1) -> list[dict]:
    """Per clip window: EPE between backend and DIS flow, DIS magnitude, ms per pair of each.

    Both flows are computed on the same frames (short side ``size``); DIS runs on grayscale uint8.
    """
    flow = build_flow(FlowSettings(backend, size, iters), allow_random=backend.startswith("raft"))
    rows = []
    torch.set_grad_enabled(False)
    try:
        for name, windows in CLIPS.items():
            for start, count in windows:
                video = read_video(clip_path(name), start, count, short_side=size)
                h, w = video.shape[1:3]
                video = video[:, : h - h % 8, : w - w % 8]  # same grid for both flows
                idx = np.linspace(0, len(video) - 1 - gap, pairs).round().astype(int)
                epe, mag, t_ours, t_dis = [], [], 0.0, 0.0
                for i in idx:
                    a, b = video[i], video[i + gap]
                    t0 = time.perf_counter()
                    ref = dis_flow(a, b)
                    t_dis += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    ours = flow(to_tensor(a[None]), to_tensor(b[None]))[0].permute(1, 2, 0).numpy()
                    t_ours += time.perf_counter() - t0
                    epe.append(float(np.linalg.norm(ours - ref, axis=-1).mean()))
                    mag.append(float(np.linalg.norm(ref, axis=-1).mean()))
                rows.append({
                    "clip": f"{name}@{start}", "size": f"{video.shape[2]}x{video.shape[1]}", "pairs": len(idx),
                    "dis_magnitude_px": float(np.mean(mag)), "epe_vs_dis_px": float(np.mean(epe)),
                    "ms_per_pair": 1000 * t_ours / len(idx), "dis_ms_per_pair": 1000 * t_dis / len(idx),
                })
    finally:
        torch.set_grad_enabled(True)
    return rows


def format_table(rows: list[dict], backend: str) -> str:
    head = f"| clip window | frames | mean DIS flow (px) | EPE {backend} vs DIS (px) | {backend} ms/pair | DIS ms/pair |"
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['clip']} | {r['size']} | {r['dis_magnitude_px']:.2f} | {r['epe_vs_dis_px']:.2f} | "
                     f"{r['ms_per_pair']:.1f} | {r['dis_ms_per_pair']:.1f} |")
    return "\n".join(lines)
