"""DDIM sampling of the reference model with optional MotionPrompt guidance."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ...engine.guidance import MotionGuide
from .host import DiffusersVideoHost


@dataclass
class SampleResult:
    frames: torch.Tensor  # uint8 [F, H, W, 3]
    latents: torch.Tensor
    seconds: float
    steps: list[dict] = field(default_factory=list)


def initial_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A seed's starting latents (before ``init_noise_sigma``), drawn on the CPU so a seed gives the same clip
    on any device; the toy sampler draws from here too, which is what pairs its plain clips with guided ones."""
    gen = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(shape, generator=gen)


def sample(
    host: DiffusersVideoHost,
    guide: MotionGuide | None = None,
    steps: int = 25,
    cfg_scale: float = 7.5,
    seed: int = 0,
    num_frames: int = 16,
    height: int = 64,
    width: int = 64,
    on_step=None,
) -> SampleResult:
    model = host.model
    sched = model.scheduler
    sched.set_timesteps(steps, device=host.device)
    scale = model.latent_scale
    shape = (1, model.unet.config.in_channels, num_frames, height // scale, width // scale)
    latents = (initial_noise(shape, seed) * sched.init_noise_sigma).to(host.device)
    t0 = time.perf_counter()
    for i, t in enumerate(sched.timesteps):
        cond = None
        if guide is not None:
            predict = host.predictor(latents, t, cfg_scale, guide.cfg.x0_mode)
            cond = guide.conditioning(i, steps, predict)
        with torch.no_grad():
            eps = host.cfg_eps(latents, t, host.cond_plain if cond is None else cond, cfg_scale)
            latents = sched.step(eps.float(), t, latents.float()).prev_sample
        if on_step is not None:
            on_step(i, steps)
        if host.interrupted():
            break
    frames = host.decode_video(latents)
    records = [r.to_dict() for r in guide.records] if guide is not None else []
    return SampleResult(frames, latents, time.perf_counter() - t0, records)
