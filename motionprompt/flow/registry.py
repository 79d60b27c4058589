"""Optical-flow backends behind one interface: frames in [-1, 1] -> flow in pixels, differentiable.

Every backend resizes both frames to its working resolution (short side = ``FlowSettings.size``,
both sides multiples of 8) and returns flow in pixels *of that resolution*; ``losses.normalize_flow``
turns it into a fraction of the frame, which is what the discriminator and the losses see.

This module is the public entry (``build_flow``) and holds the RAFT backend; the base class and the
backend table live in ``flow.base`` and are re-exported here under their old names.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from . import lk as _flow_lk  # noqa: F401  registers the weight-free backend
from .base import FLOW_BACKENDS, FlowEstimator, FlowFactory, FlowWeightsMissing, register_flow, working_size
from .settings import FlowSettings

RAFT_FILES = {
    "raft_small": "raft_small_C_T_V2-01064c6d.pth",
    "raft_large": "raft_large_C_T_SKHT_V2-ff5fadd5.pth",
}
RAFT_URL = "https://download.pytorch.org/models/"


def find_raft_weights(variant: str, search_dirs: list[str | os.PathLike]) -> Path | None:
    """The torchvision file name first, then any ``<variant>*.pth`` a user renamed."""
    for d in search_dirs:
        d = Path(d)
        exact = d / RAFT_FILES[variant]
        if exact.is_file():
            return exact
        matches = sorted(d.glob(f"{variant}*.pth")) if d.is_dir() else []
        if matches:
            return matches[0]
    return None


class RaftFlow(FlowEstimator):
    """torchvision RAFT. Its update loop detaches coordinates, so input gradients are RAFT's own
    truncated gradients (as in the RAFT paper), not the exact derivative."""

    min_size = 128  # torchvision RAFT refuses smaller feature maps

    def __init__(self, settings: FlowSettings, state_dict: dict | None):
        super().__init__(settings)
        from torchvision.models.optical_flow import raft_large, raft_small

        build = {"raft_small": raft_small, "raft_large": raft_large}[settings.backend]
        self.net = build(weights=None, progress=False)
        if state_dict is not None:
            self.net.load_state_dict(state_dict)
        self.pretrained = state_dict is not None
        self.net.eval().requires_grad_(False)

    def _flow(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(a, b, num_flow_updates=self.settings.iters)[-1]


def _load_raft_state(settings: FlowSettings, weights_dirs, allow_download: bool, allow_random: bool):
    variant = settings.backend
    path = find_raft_weights(variant, list(weights_dirs or []))
    if path is not None:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt file or a pickle that weights_only refuses
            raise FlowWeightsMissing(f"could not read RAFT weights {path}: {exc}") from exc
    if allow_download:
        from torchvision.models.optical_flow import Raft_Large_Weights, Raft_Small_Weights

        weights = {"raft_small": Raft_Small_Weights, "raft_large": Raft_Large_Weights}[variant].DEFAULT
        return weights.get_state_dict(progress=True)
    if allow_random:
        return None
    where = ", ".join(str(d) for d in (weights_dirs or [])) or "(no models folder given)"
    raise FlowWeightsMissing(
        f"RAFT weights '{RAFT_FILES[variant]}' not found in {where}. Download "
        f"{RAFT_URL}{RAFT_FILES[variant]} and put it in that folder, allow downloads, or pick the "
        "weight-free flow backend."
    )


@register_flow("raft_small")
@register_flow("raft_large")
def _raft_factory(settings: FlowSettings, weights_dirs=None, allow_download=False, allow_random=False):
    return RaftFlow(settings, _load_raft_state(settings, weights_dirs, allow_download, allow_random))


def build_flow(
    settings: FlowSettings,
    weights_dirs: list[str | os.PathLike] | None = None,
    allow_download: bool = False,
    allow_random: bool = False,
) -> FlowEstimator:
    """Build a frozen flow estimator. Random RAFT weights only when ``allow_random`` (tests)."""
    if settings.backend not in FLOW_BACKENDS:
        raise ValueError(f"unknown flow backend {settings.backend!r}; available: {sorted(FLOW_BACKENDS)}")
    return FLOW_BACKENDS[settings.backend](
        settings, weights_dirs=weights_dirs, allow_download=allow_download, allow_random=allow_random
    )


__all__ = ["FLOW_BACKENDS", "RAFT_FILES", "RAFT_URL", "FlowEstimator", "FlowFactory", "FlowWeightsMissing", "RaftFlow",
           "build_flow", "find_raft_weights", "register_flow", "working_size"]
