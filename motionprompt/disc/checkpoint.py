"""Discriminator checkpoints: safetensors + JSON metadata, written atomically, validated on load.

No pickle anywhere: the WebUI's restricted unpickler rejects recent ``.ckpt`` files, and user files
must never execute code. Every failure raises ``CheckpointError`` whose message names the file and
what is wrong with it, so hosts can show it as one line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..files.atomic import save_safetensors
from ..flow.settings import FlowSettings
from .formats import DISC_FORMAT
from .models import ARCHITECTURES, build_discriminator

FORMAT = DISC_FORMAT
FORMAT_VERSION = 1
FLOW_UNITS = "fraction_of_frame"  # flow_x / W, flow_y / H at the flow resolution (losses.normalize_flow)
REQUIRED_KEYS = ("format", "format_version", "arch", "arch_config", "flow", "normalization")


class CheckpointError(ValueError):
    def __init__(self, path, reason: str):
        super().__init__(f"discriminator {os.fspath(path)!s}: {reason}")  # hosts say "MotionPrompt" once
        self.path = os.fspath(path)
        self.reason = reason


@dataclass
class Discriminator:
    """A loaded discriminator with everything needed to use it correctly."""

    model: nn.Module
    arch: str
    config: dict
    flow: FlowSettings
    training: dict = field(default_factory=dict)
    path: str | None = None

    def check_flow(self, flow: FlowSettings) -> None:
        """Refuse to score flow from another backend: D only knows the statistics it was trained on."""
        if flow.backend != self.flow.backend:
            raise CheckpointError(
                self.path or "<memory>",
                f"was trained on '{self.flow.backend}' flow but guidance uses '{flow.backend}'; "
                f"select the '{self.flow.backend}' flow backend or train a discriminator for '{flow.backend}'",
            )


def save_discriminator(
    path: str | os.PathLike, model: nn.Module, flow: FlowSettings, training: dict | None = None
) -> Path:
    """Write atomically: a temp file in the same folder, fsync, then rename over the target."""

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"discriminators are stored as .safetensors, got {path.name}")
    arch = getattr(model, "arch", None)
    if arch not in ARCHITECTURES:
        raise ValueError(f"model has no registered architecture (got {arch!r})")
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "arch": arch,
        "arch_config": json.dumps(model.config),
        "flow": json.dumps(flow.to_dict()),
        "normalization": json.dumps({"flow_units": FLOW_UNITS}),
        "training": json.dumps(training or {}),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return save_safetensors(tensors, metadata, path)


def _json(path, metadata: dict, key: str) -> dict:
    try:
        value = json.loads(metadata[key])
    except (TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(path, f"metadata '{key}' is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise CheckpointError(path, f"metadata '{key}' must be a JSON object")
    return value


def read_metadata(path: str | os.PathLike) -> dict:
    """Validated metadata only (cheap: reads the header), for listings and compatibility checks."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file not found")  # the WebUI adds where its dropdown looks (preflight)
    if path.suffix != ".safetensors":
        raise CheckpointError(path, "only .safetensors discriminators are loaded (pickle files are never opened)")
    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
    except Exception as exc:
        raise CheckpointError(path, f"not a readable safetensors file (corrupt or truncated?): {exc}") from exc
    if metadata.get("format") != FORMAT:
        raise CheckpointError(path, "is a safetensors file but not a MotionPrompt discriminator (no format tag)")
    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise CheckpointError(path, f"metadata lacks {missing}")
    try:
        version = int(metadata["format_version"])
    except ValueError as exc:
        raise CheckpointError(path, f"bad format_version {metadata['format_version']!r}") from exc
    if version > FORMAT_VERSION:
        raise CheckpointError(path, f"format version {version} is newer than this extension ({FORMAT_VERSION}); update it")
    if metadata["arch"] not in ARCHITECTURES:
        raise CheckpointError(path, f"unknown architecture {metadata['arch']!r} (known: {sorted(ARCHITECTURES)})")
    norm = _json(path, metadata, "normalization")
    if norm.get("flow_units") != FLOW_UNITS:
        raise CheckpointError(path, f"flow units {norm.get('flow_units')!r} are not supported (expected {FLOW_UNITS})")
    flow = _json(path, metadata, "flow")
    try:
        flow_settings = FlowSettings(**flow)
        flow_settings.validate()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(path, f"bad flow settings {flow}: {exc}") from exc
    return {
        "arch": metadata["arch"],
        "arch_config": _json(path, metadata, "arch_config"),
        "flow": flow_settings,
        "training": _json(path, metadata, "training") if "training" in metadata else {},
        "format_version": version,
    }


def load_discriminator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Discriminator:
    from safetensors.torch import load_file

    meta = read_metadata(path)
    try:
        model = build_discriminator(meta["arch"], **meta["arch_config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(path, f"cannot build '{meta['arch']}' with {meta['arch_config']}: {exc}") from exc
    try:
        state = load_file(os.fspath(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(path, f"tensor data unreadable (corrupt or truncated?): {exc}") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(path, f"weights do not match the architecture: missing {missing[:4]}, unexpected {unexpected[:4]}")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(path, f"tensor '{key}' has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(path, f"tensor '{key}' holds NaN or infinite values")
    model.load_state_dict(state)
    model.to(device).eval().requires_grad_(False)
    return Discriminator(model, meta["arch"], meta["arch_config"], meta["flow"], meta["training"], os.fspath(path))
