"""Where a token-train run's data comes from: the video model, the prompt splits, seeds, and the cached
plain (or on-policy) DDIM trajectories whose noisy latents the token is trained on."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..hosts.diffusers.sources import ModelSource, load_source, world_for
from .config import TokenTrainConfig, TokenTrainError


# --------------------------------------------------------------------------------------------- inputs
def load_video_model(spec: str, frames: int = 16, size: int = 64, device: str = "cpu",
                     motion_adapter: str | None = None, config: str | None = None) -> ModelSource:
    """``--model`` as ``evaluate``/``generate`` read it: a registered kind ("toy", a toy model file, "tiny", a
    single-file SD1.5 checkpoint with ``motion_adapter`` and ``config``) or a diffusers folder, with
    ``motion_adapter`` for a plain SD1.5 one (``hosts.diffusers.sources``)."""
    return load_source(spec, frames, size, device, motion_adapter=motion_adapter or None, config=config or None)


def read_prompts(path: str | os.PathLike) -> list[str]:
    """One prompt a line; blank lines and lines starting with # are skipped; duplicates dropped, order kept."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return list(dict.fromkeys(s.strip() for s in lines if s.strip() and not s.strip().startswith("#")))


def prompt_split(cfg: TokenTrainConfig) -> tuple[list[str], list[str], str]:
    """(training prompts, held-out prompts, where they came from). By default the guiding split of the model's world
    (``hosts.diffusers.sources.world_for``: the toy world's for a model without one), never its evaluation captions."""
    if cfg.prompts:
        prompts, source = read_prompts(cfg.prompts), os.path.basename(cfg.prompts)
    else:
        world = world_for(cfg.model)
        prompts, source = world.captions("guide"), f"{world.title}: guiding-split captions (none of the evaluation set)"
    if not prompts:
        raise TokenTrainError(f"no prompts in {cfg.prompts}")
    if cfg.val_prompts:
        held = read_prompts(cfg.val_prompts)
        train = [p for p in prompts if p not in set(held)]
    else:
        k = round(len(prompts) * cfg.val_fraction) if len(prompts) > 1 else 0
        idx = set(np.unique(np.linspace(0, len(prompts) - 1, k).round().astype(int)).tolist()) if k else set()
        held = [p for i, p in enumerate(prompts) if i in idx]
        train = [p for i, p in enumerate(prompts) if i not in idx]
    if not train:
        raise TokenTrainError("every prompt is held out: give more prompts or a smaller validation fraction")
    return train, held, source


#: where a run's own seeds start when it gives a base (``TokenTrainConfig.seed_base``), by purpose
SEED_OFFSETS = {"token_train": 0, "token_val": 1_000_000}


def seed_list(kind: str, n: int, model: str = "", base: int = -1) -> list[int]:
    """The first ``n`` seeds of purpose ``kind`` ("token_train", "token_val"): from ``base`` on (a run that picks its
    own, e.g. the WebUI tab's), else those of the model's world (or the default world)."""
    if base >= 0:
        return [base + SEED_OFFSETS[kind] + i for i in range(n)]
    return world_for(model).seeds(kind, n)


# --------------------------------------------------------------------------------------------- sampling
def ddim_for(model, steps: int, device):
    sched = type(model.scheduler).from_config(model.scheduler.config)  # the model's own stays untouched
    sched.set_timesteps(steps, device=device)
    return sched


@torch.no_grad()
def trajectories(model, conds: list[torch.Tensor], uncond: torch.Tensor, seeds: list[int], keep: list[int],
                 steps: int, cfg_scale: float, frames: int, size: int, device, batch: int = 8) -> torch.Tensor:
    """Noisy latents z_t [len(seeds), len(keep), C, F, h, w] that the reference sampler (``hosts.diffusers.
    sampler.sample``: same start noise per seed, DDIM, CFG) has at steps ``keep``, for conditioning ``conds[i]``
    [1, L, D] (a prompt, with or without tokens); batched, and stopped after the last kept step."""
    from ..hosts.diffusers.sampler import initial_noise

    sched = ddim_for(model, steps, device)
    unet = model.unet
    shape = (1, unet.config.in_channels, frames, size // model.latent_scale, size // model.latent_scale)
    last = max(keep)
    out = []
    for lo in range(0, len(seeds), batch):
        chunk = seeds[lo : lo + batch]
        b = len(chunk)
        lat = torch.cat([initial_noise(shape, s) for s in chunk]).to(device) * sched.init_noise_sigma
        ctx = torch.cat([torch.cat(conds[lo : lo + b]), uncond.expand(b, -1, -1)]).repeat_interleave(frames, dim=0)
        kept = []
        for i, t in enumerate(sched.timesteps):
            if i in keep:
                kept.append(lat.float().cpu())
            if i >= last:
                break
            eps = unet(torch.cat([lat, lat]).to(unet.dtype), t, encoder_hidden_states=ctx.to(unet.dtype)).sample
            c, u = eps.float().chunk(2)
            lat = sched.step(u + cfg_scale * (c - u), t, lat.float()).prev_sample
        out.append(torch.stack(kept, dim=1))
    return torch.cat(out)


def update_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step) * 7_919 + 17) % (2**63))
