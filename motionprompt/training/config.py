"""What a discriminator training run is: its settings, the files it writes, and what may change on resume.

Kept apart from the training loop so the WebUI tab, the CLI and the toy demo can build and validate a
run without importing the loop, and so the resume check (``fingerprint``) sits next to the fields it
compares. The settings describe the run, never the processes that execute it: ``batch`` is the global
batch whatever the number of torchrun processes, so a run saved by N processes resumes under M.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..disc.models import ARCHITECTURES
from ..flow.settings import FlowSettings
from .corruptions import parse_corruptions


class TrainError(ValueError):
    """A run that cannot start or resume; the message says what to do."""


def default_cache_dir() -> Path:
    """``$MOTIONPROMPT_FLOW_CACHE``, else ``~/.cache/motionprompt/flows`` (kept out of the models folder)."""
    env = os.environ.get("MOTIONPROMPT_FLOW_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "motionprompt" / "flows"


@dataclass
class TrainConfig:
    real: list[str]  # folders (or video files) of real footage
    out: str  # discriminator .safetensors to write
    flow: FlowSettings  # must be the flow the discriminator will be used with
    fake: list[str] = field(default_factory=list)  # folders of generated videos
    synthetic: list[str] = field(default_factory=list)  # corruption names (corruptions.CORRUPTIONS)
    flow_weights: list[str] = field(default_factory=list)  # folders searched for RAFT .pth
    allow_download: bool = False
    arch: str = "cnn"
    arch_config: dict = field(default_factory=dict)
    steps: int = 2000
    batch: int = 32  # global: split evenly over the processes of a torchrun launch
    lr: float = 3e-4
    weight_decay: float = 0.01
    gap_min: int = 1
    gap_max: int = 4
    pairs_per_clip: int = 32
    synthetic_per_clip: int | None = None  # per real clip; None: pairs_per_clip (half with --fake)
    crop_min: float = 0.7
    augment: bool = True  # flips and time reversal, flow-aware
    val_fraction: float = 0.2
    val_every: int = 100
    save_every: int = 500
    seed: int = 0  # initialisation, batches, augmentation
    data_seed: int = 0  # pair sampling, crops, corruptions, split (changing it recomputes flows)
    cache_dir: str | None = None
    device: str = "cpu"
    resume: bool = False
    overwrite: bool = False

    # fields that may differ between a run and its resumption
    _RESUMABLE_CHANGES = ("out", "steps", "val_every", "save_every", "cache_dir", "device", "resume", "overwrite",
                          "flow_weights", "allow_download")

    def validate(self) -> TrainConfig:
        self.flow.validate()
        self.synthetic = parse_corruptions(self.synthetic)
        checks = [
            (bool(self.real), "give at least one folder of real videos"),
            (str(self.out).endswith(".safetensors"), f"output must be a .safetensors file, got {self.out}"),
            (self.arch in ARCHITECTURES, f"arch must be one of {sorted(ARCHITECTURES)}"),
            (self.steps >= 1 and self.batch >= 2, "need steps >= 1 and batch >= 2"),
            (self.lr > 0 and self.weight_decay >= 0, "need lr > 0 and weight_decay >= 0"),
            (1 <= self.gap_min <= self.gap_max, "need 1 <= gap min <= gap max"),
            (0 < self.crop_min <= 1, "crop_min must be in (0, 1]"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (self.val_every >= 1 and self.save_every >= 1, "val_every and save_every must be >= 1"),
            (self.pairs_per_clip >= 1, "pairs_per_clip must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise TrainError(msg)
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["flow"] = self.flow.to_dict()
        return d

    def fingerprint(self) -> dict:
        d = self.to_dict()
        for k in self._RESUMABLE_CHANGES:
            d.pop(k, None)
        d["real"] = [os.path.abspath(p) for p in d["real"]]
        d["fake"] = [os.path.abspath(p) for p in d["fake"]]
        return d


def side_paths(out) -> dict[str, Path]:
    out = Path(out)
    stem = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.name
    return {"checkpoint": out, "resume": out.with_name(stem + ".resume.safetensors"), "csv": out.with_name(stem + ".csv")}
