"""Synthetic frames with ground-truth motion (made by the tests themselves, no files)."""

import math

import torch
import torch.nn.functional as F

from motionprompt.flow.lk import warp


def texture(size: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    """Multi-scale smooth noise in [-1, 1]: textured everywhere, like natural images at these scales."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(batch, 3, size, size)
    for s in (2, 4, 8, 16, 32):
        noise = torch.randn(batch, 3, size // s + 1, size // s + 1, generator=g)
        out += F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False) / math.sqrt(s)
    return (out / out.std() * 0.4).clamp(-1, 1)


def grid(size: int):
    return torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")


def translation(size: int, dx: float, dy: float) -> torch.Tensor:
    ys, _ = grid(size)
    return torch.stack([torch.full_like(ys, dx), torch.full_like(ys, dy)])


def rotation(size: int, degrees: float) -> torch.Tensor:
    ys, xs = grid(size)
    c = (size - 1) / 2
    a = math.radians(degrees)
    return torch.stack([
        (math.cos(a) - 1) * (xs - c) - math.sin(a) * (ys - c),
        math.sin(a) * (xs - c) + (math.cos(a) - 1) * (ys - c),
    ])


def smooth_field(size: int, amplitude: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 2, 4, 4, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0] * amplitude


def pair_with_flow(frame_b: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Frame a such that a(x) = b(x + flow(x)): the ground-truth flow from a to b is ``flow``."""
    return warp(frame_b, flow.unsqueeze(0).expand(frame_b.shape[0], -1, -1, -1))


def valid_epe(est: torch.Tensor, flow: torch.Tensor, margin: int = 4) -> float:
    """End-point error over pixels whose match stays inside both frames."""
    size = flow.shape[-1]
    ys, xs = grid(size)
    tx, ty = xs + flow[0], ys + flow[1]
    lo, hi = margin, size - 1 - margin
    ok = (tx > lo) & (tx < hi) & (ty > lo) & (ty < hi) & (xs > lo) & (xs < hi) & (ys > lo) & (ys < hi)
    return (est[0] - flow).norm(dim=0)[ok].mean().item()
