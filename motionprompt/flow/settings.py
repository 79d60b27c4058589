"""How flow is computed: the value every flow backend is built from and every discriminator records."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class FlowSettings:
    """How flow is computed; recorded in discriminator checkpoints so D and flow always match."""

    backend: str = "raft_small"  # paper: RAFT (variant unknown) -> small is the cheap default [ours]
    size: int = 256  # short side of the frames fed to the flow network, multiple of 8 [ours]
    iters: int = 12  # RAFT refinement iterations (torchvision default) [ours]

    def validate(self) -> None:
        if self.size % 8 or self.size < 8:
            raise ValueError(f"flow size must be a positive multiple of 8, got {self.size}")
        if self.iters < 1:
            raise ValueError(f"flow iterations must be >= 1, got {self.iters}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
