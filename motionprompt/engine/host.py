"""The small interface a host (WebUI, diffusers, a test double) implements for the engine.

The engine never sees a UNet, a sampler or a prompt: it asks the host for three differentiable
services and one per-step closure, so the same guidance code runs wherever those exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class GuidanceHost(Protocol):
    def embed_init(self, word: str, n_tokens: int) -> torch.Tensor:
        """[n_tokens, D] input embeddings to start the learnable tokens from (e.g. the word "authentic")."""

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Conditioning for the user's prompt with ``tokens`` [n, D] appended, differentiable w.r.t. tokens.

        The tensor's layout is the host's own; the engine only hands it back to ``predict_x0`` and,
        detached, to the host's sampler.
        """

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latent frames [n, C, h, w] -> RGB frames [n, 3, H, W] in [-1, 1], differentiable."""

    def interrupted(self) -> bool:
        """True when the user pressed Interrupt/Skip; checked between inner iterations."""


class CheckpointingHost(Protocol):
    """Optional: a host that names the modules to checkpoint on the balanced and low memory paths
    (``checkpointing.find_blocks`` over its UNet, motion modules and, with ``decoder``, its VAE decoder)."""

    def checkpoint_blocks(self, decoder: bool) -> list:
        ...


#: Per-step closure from the host: conditioning -> clean-latent estimate x0 of *all* frames,
#: [F, C, h, w], for the current latent and timestep, differentiable w.r.t. the conditioning.
#: Optional attributes: ``frame_count`` (then it is called ``predict(cond, frames)`` with the frames the loss
#: reads, and may leave the others out of its UNet call) and ``shape_hint(pairs) -> (frames run with
#: gradients, latent h * w, element size)`` for the memory plan.
PredictX0 = Callable[[torch.Tensor], torch.Tensor]
