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
    gen = torch.Generator("cpu").manual_seed(seed)
    latents = (torch.randn(shape, generator=gen) * sched.init_noise_sigma).to(host.device)
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
