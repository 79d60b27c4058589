"""A planted text-to-motion model for amortized-token tests: the text conditioning sets the speed of a bump
that moves along x, so a token can really change the motion a flow discriminator sees.

Random tiny UNets barely let text change the *difference* between frames (a token shifts all frames alike),
so a trainer that works and one that does nothing look the same on them. Here the path is the production
one (real CLIP text encoder with the token spliced in, DDIM, x0, decode, real flow, D); only the UNet and
the VAE are planted: the UNet predicts x0 (``prediction_type="sample"``) = a bump at
``centre + (f - mid) * speed`` with ``speed = tanh(gain * mean(text rows) . w)``, the VAE upsamples.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn

from motionprompt.flow.settings import FlowSettings

FLOW = FlowSettings(backend="lk_pyramid", size=16, iters=2)
FRAMES, SIZE = 4, 16


class TextMotionUNet(nn.Module):
    def __init__(self, width: int, gain: float = 4.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(width, generator=g) / math.sqrt(width))
        self.config = SimpleNamespace(in_channels=4)
        self.gain = gain
        self.calls: list[bool] = []  # torch.is_grad_enabled() of every call

    @property
    def dtype(self):
        return torch.float32

    def speed(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.gain * rows.float().mean(1) @ self.w)

    def forward(self, latents, t, encoder_hidden_states):
        self.calls.append(torch.is_grad_enabled())
        b, c, f, h, w = latents.shape
        v = self.speed(encoder_hidden_states).view(b, f)[:, :1]  # one text row per frame, all equal
        pos = (w - 1) / 2 + (torch.arange(f, dtype=torch.float32) - (f - 1) / 2) * v  # [b, f]
        xs = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w)
        ys = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1)
        bump = torch.exp(-((xs - pos[:, :, None, None]) ** 2 + (ys - (h - 1) / 2) ** 2) / 4.0)
        return SimpleNamespace(sample=bump[:, None].expand(b, c, f, h, w) * 2 - 1 + 0.05 * latents)


class UpsampleVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(scaling_factor=1.0, shift_factor=None, block_out_channels=(4, 4))

    @property
    def dtype(self):
        return torch.float32

    def decode(self, z):
        return SimpleNamespace(sample=nn.functional.interpolate(z[:, :3], scale_factor=2, mode="bilinear",
                                                                align_corners=False))


class MeanFlowX(nn.Module):
    """Planted discriminator: 'real' = moving towards -x (k < 0) or +x (k > 0), a plain flow statistic."""

    def __init__(self, k: float = -20.0):
        super().__init__()
        self.k = k

    def forward(self, flow):
        return self.k * flow[:, 0].mean(dim=(1, 2))


def planted_model():
    from diffusers import DDIMScheduler

    from motionprompt.hosts.diffusers.models import VideoModel
    from motionprompt.toy.model import ToyArch, build

    arch = ToyArch(size=SIZE, frames=FRAMES, unet_channels=(16, 32), vae_channels=(16, 16), text_width=16, text_layers=1)
    parts = build(arch, seed=0)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1, timestep_spacing="linspace", prediction_type="sample")
    return VideoModel(TextMotionUNet(arch.text_width), UpsampleVAE(), parts.text.eval(), parts.tokenizer, sched,
                      name="planted")


def planted_source():
    from motionprompt.amortized.train import ModelSource

    return ModelSource(planted_model(), FRAMES, SIZE, {"kind": "planted (tests)"})


def planted_disc(k: float = -20.0):
    from motionprompt.disc.checkpoint import Discriminator

    return Discriminator(MeanFlowX(k), "planted", {}, FLOW)


PROMPTS = ["a red circle moving right slowly", "a blue square moving left fast", "a green triangle moving up slowly",
           "a red square moving down fast", "a blue circle moving up fast", "a green square moving right slowly"]
