"""Where token training runs the model: the few services ``TokenTrainer`` asks of a host.

The trainer's algorithm (latent cache over prompts x seeds x guided steps, random triples per update, held-out
validation, resume) is the same wherever it runs; only these services differ. ``DiffusersBackend`` runs the
reference host (``hosts.diffusers``: ``token-train`` on the command line); the WebUI's MotionPrompt tab passes
``hosts.webui.token_backend.WebUITokenBackend``, which runs the WebUI's own model path — the same text encoder,
UNet with AnimateDiff's motion module and x0 predictor the per-sample mode uses inside a generation.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

import torch

from ..engine.host import PredictX0
from ..hosts.diffusers.sources import ModelSource


class TokenHost(Protocol):
    """A ``GuidanceHost`` for one prompt (``embed_init``, ``encode``, ``decode``, optionally ``checkpoint_blocks``)
    that also holds the prompt's own conditioning without tokens."""

    cond_plain: torch.Tensor


class TokenBackend(Protocol):
    frames: int
    size: int
    info: dict  # what the token's metadata says about the model

    def host(self, prompt: str) -> TokenHost:
        """The host of ``prompt`` (built once, kept)."""

    def trajectories(self, conds: list[torch.Tensor], seeds: list[int], keep: list[int]) -> torch.Tensor:
        """Noisy latents [len(seeds), len(keep), C, F, h, w] (DDPM scaling) that DDIM + CFG with conditioning
        ``conds[i]`` from seed ``seeds[i]``'s start noise has at sampling steps ``keep``."""

    def step(self) -> contextlib.AbstractContextManager:
        """Entered around every model call of an update, trajectory or validation, forward and backward."""

    def predictor(self, prompt: str, latents: torch.Tensor, step: int, x0_mode: str) -> PredictX0:
        """The x0 predictor for ``latents`` [1, C, F, h, w] (one clip of the cache) at sampling step ``step``."""


class DiffusersBackend:
    """The reference host: a diffusers AnimateDiff model (or the toy model), DDIM from the model's scheduler."""

    def __init__(self, source: ModelSource, steps: int, cfg_scale: float, n_tokens: int, device, cache_batch: int = 8):
        from .inputs import ddim_for

        self.source = source
        self.frames, self.size, self.info = source.frames, source.size, source.info
        self.steps, self.cfg_scale, self.n_tokens = steps, cfg_scale, n_tokens
        self.device = torch.device(device)
        self.cache_batch = cache_batch
        self.timesteps = ddim_for(source.model, steps, self.device).timesteps
        self._hosts: dict = {}

    def host(self, prompt: str):
        from ..hosts.diffusers.host import DiffusersVideoHost

        if prompt not in self._hosts:
            self._hosts[prompt] = DiffusersVideoHost(self.source.model, prompt, "", self.n_tokens, self.device)
        return self._hosts[prompt]

    def trajectories(self, conds: list[torch.Tensor], seeds: list[int], keep: list[int]) -> torch.Tensor:
        from .inputs import trajectories

        uncond = next(iter(self._hosts.values())).uncond
        return trajectories(self.source.model, conds, uncond, seeds, keep, self.steps, self.cfg_scale, self.frames,
                            self.size, self.device, self.cache_batch)

    def step(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def predictor(self, prompt: str, latents: torch.Tensor, step: int, x0_mode: str) -> PredictX0:
        return self.host(prompt).predictor(latents, self.timesteps[step], self.cfg_scale, x0_mode)
