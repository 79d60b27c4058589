"""What every flow backend shares: the estimator base class (resize to the working size, then ``_flow``),
the working-size rule, the backend table and its ``register_flow`` decorator.

Backends (``registry`` for RAFT, ``lk`` for the weight-free one) import this module; nothing here imports
a backend, so the backends and the registry never import each other in a circle.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .settings import FlowSettings


class FlowWeightsMissing(FileNotFoundError):
    """Pretrained flow weights are not on disk and downloading was not allowed."""


def working_size(height: int, width: int, short_side: int, minimum: int = 8) -> tuple[int, int]:
    """Aspect-preserving size with the given short side, both sides rounded to multiples of 8."""
    scale = short_side / min(height, width)

    def r8(v: float) -> int:
        return max(minimum, round(v / 8.0) * 8)

    return r8(height * scale), r8(width * scale)


class FlowEstimator(nn.Module):
    """Base class: subclasses implement ``_flow(a, b)`` on already resized frames."""

    name = "base"
    min_size = 8

    def __init__(self, settings: FlowSettings):
        super().__init__()
        settings.validate()
        self.settings = settings

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3:
            raise ValueError(f"flow needs two [B,3,H,W] batches of equal shape, got {tuple(a.shape)}, {tuple(b.shape)}")
        size = working_size(a.shape[-2], a.shape[-1], self.settings.size, self.min_size)
        if tuple(a.shape[-2:]) != size:
            # antialiased when shrinking: 512 px decodes -> 128 px flow would alias otherwise, and training
            # (cv2 INTER_AREA crops) never saw aliased frames
            aa = size[0] < a.shape[-2]
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False, antialias=aa)
            b = F.interpolate(b, size=size, mode="bilinear", align_corners=False, antialias=aa)
        return self._flow(a.float(), b.float())

    def _flow(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


FlowFactory = Callable[..., FlowEstimator]
FLOW_BACKENDS: dict[str, FlowFactory] = {}


def register_flow(name: str):
    def deco(factory: FlowFactory) -> FlowFactory:
        FLOW_BACKENDS[name] = factory
        return factory

    return deco
