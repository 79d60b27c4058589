"""ldm/modules/diffusionmodules/util.py: the UNet's helpers. ``timestep_embedding`` (sinusoidal, cos then sin
halves), ``GroupNorm32`` / ``normalization`` (the GroupNorm class AnimateDiff's V1 GroupNorm hack patches) and
``checkpoint``.

Toy differences: ``normalization`` makes 4 groups (upstream 32, too many for the toy's 16 channels), and
``GroupNorm32`` upcasts half-precision inputs only (upstream: every input to float32), so the tests' float64 copy of
the model runs in float64. ``checkpoint`` with ``flag`` False calls the function directly, as upstream; A1111's
``configs/v1-inference.yaml`` sets ``use_checkpoint: False``, so nothing in the SD1.5 UNet checkpoints (with
``flag`` True upstream runs its own ``CheckpointFunction``; the double, never built that way, uses
``torch.utils.checkpoint``)."""

import math

import torch
import torch.utils.checkpoint
from torch import nn


def timestep_embedding(timesteps, dim, max_period=10000, repeat_only=False):
    if repeat_only:
        return timesteps[:, None].expand(-1, dim)
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32, device=timesteps.device)
                      / half)
    args = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class GroupNorm32(nn.GroupNorm):
    def forward(self, x):
        if x.dtype in (torch.float16, torch.bfloat16):
            return super().forward(x.float()).type(x.dtype)
        return super().forward(x)


def normalization(channels):
    return GroupNorm32(4, channels)


def checkpoint(func, inputs, params, flag):
    if flag:
        return torch.utils.checkpoint.checkpoint(func, *inputs, use_reentrant=False)
    return func(*inputs)
