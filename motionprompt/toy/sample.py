"""Plain batched sampling of the toy model (discriminator data, the quality gate) and real clips by caption.

The initial noise of a (caption, seed) comes from the reference sampler's ``initial_noise``, so a clip sampled here in a
batch is the plain clip ``evaluate`` pairs with its guided twin, up to batch-size rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..files.video import to_uint8
from ..hosts.diffusers.host import vae_decode
from ..hosts.diffusers.sampler import initial_noise as seed_noise
from .model import ToyParts
from .world import LEVELS, WorldSpec, parse_caption, render, with_caption

DEFAULT_CFG = 5.0
DEFAULT_STEPS = 25


def initial_noise(parts: ToyParts, seed: int) -> torch.Tensor:
    a = parts.arch
    latent = a.size // 2 ** (len(a.vae_channels) - 1)
    return seed_noise((1, parts.unet.config.in_channels, a.frames, latent, latent), seed)


@torch.no_grad()
def encode_prompts(parts: ToyParts, prompts: list[str]) -> torch.Tensor:
    return parts.text(parts.caption_ids(prompts))[0]


@torch.no_grad()
def sample_batch(parts: ToyParts, prompts: list[str], seeds: list[int], steps: int = DEFAULT_STEPS,
                 cfg_scale: float = DEFAULT_CFG) -> np.ndarray:
    """uint8 [B, F, H, W, 3] of plain DDIM + CFG samples."""
    sched = parts.scheduler()
    sched.set_timesteps(steps)
    b, frames = len(prompts), parts.arch.frames
    latents = torch.cat([initial_noise(parts, s) for s in seeds]) * sched.init_noise_sigma
    cond = encode_prompts(parts, prompts)
    uncond = encode_prompts(parts, [""]).expand(b, -1, -1)
    ctx = torch.cat([cond, uncond]).repeat_interleave(frames, dim=0)
    for t in sched.timesteps:
        out = parts.unet(torch.cat([latents, latents]), t, encoder_hidden_states=ctx).sample
        c, u = out.chunk(2)
        latents = sched.step(u + cfg_scale * (c - u), t, latents).prev_sample
    return decode_latents(parts, latents)


@torch.no_grad()
def decode_latents(parts: ToyParts, latents: torch.Tensor) -> np.ndarray:
    """Normalised latents [B, C, F, h, w] -> uint8 [B, F, H, W, 3]."""
    b, c, f = latents.shape[:3]
    z = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, *latents.shape[3:])
    img = to_uint8(vae_decode(parts.vae, z))
    return img.reshape(b, f, *img.shape[1:])


def sample_many(parts: ToyParts, prompts: list[str], seeds: list[int], batch: int = 8,
                progress: Callable[[int, int], None] | None = None, **kw) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for i in range(0, len(prompts), batch):
        out.extend(sample_batch(parts, prompts[i : i + batch], seeds[i : i + batch], **kw))
        if progress:
            progress(len(out), len(prompts))
    return out


def real_clip(caption: str, seed: int, spec: WorldSpec | None = None, size: int | None = None) -> np.ndarray:
    """A world clip showing exactly ``caption`` (single-object captions), drawn from ``seed``."""
    spec = spec or LEVELS["toy"]
    obj = parse_caption(caption)[0]
    scene = with_caption(spec, seed, **{k: v for k, v in obj.items() if k != "texture"}, texture=obj["texture"])
    if scene.caption != caption:
        raise ValueError(f"caption {caption!r} is not one the world writes (got {scene.caption!r})")
    return render(scene, size or spec.size)
