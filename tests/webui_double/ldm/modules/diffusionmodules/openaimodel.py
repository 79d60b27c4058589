"""ldm/modules/diffusionmodules/openaimodel.py (Stability-AI/stablediffusion, as A1111 1.10 loads it):
``TimestepBlock``, ``TimestepEmbedSequential``, ``ResBlock`` and ``UNetModel``.

``TimestepEmbedSequential.forward`` walks its layers: a ``TimestepBlock`` gets ``(x, emb)``, a ``SpatialTransformer``
``(x, context)``, anything else ``(x)`` — which is how AnimateDiff master's motion modules, appended into these
blocks, are called (its ``TimestepEmbedSequential`` hijack was removed in v1.9.4). ``UNetModel.forward`` is ldm's:
input blocks (each output kept for the skip), middle block, output blocks on ``cat([h, skip])``, ``out``.

Toy sizes, the Forge double's shape: input blocks [conv], [ResBlock, SpatialTransformer]; middle [ResBlock,
SpatialTransformer, ResBlock]; output blocks [ResBlock, SpatialTransformer], [ResBlock]; 16 channels, 2 heads,
context 32. Upstream zero-initialises the last conv of ``ResBlock.out_layers`` and of ``out``; the toy keeps random
weights. The timestep embedding (float32 upstream; A1111's sd_hijack_unet casts it to ``devices.dtype_unet`` only
when upcasting a half UNet) is cast to the input's dtype, and the input is not cast to ``self.dtype`` (ldm:
``x.type(self.dtype)``), so the tests' float64 copy of the model runs in float64."""

import torch
from ldm.modules.attention import SpatialTransformer
from ldm.modules.diffusionmodules.util import checkpoint, normalization, timestep_embedding
from torch import nn


class TimestepBlock(nn.Module):
    """Any module whose forward takes the timestep embedding as a second argument."""


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    def forward(self, x, emb, context=None):
        for layer in self:
            if isinstance(layer, TimestepBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class ResBlock(TimestepBlock):
    """GroupNorm-SiLU-conv, + the projected timestep embedding, GroupNorm-SiLU-dropout-conv, + the skip."""

    def __init__(self, channels, emb_channels, dropout=0.0, out_channels=None, use_checkpoint=False):
        super().__init__()
        self.channels, self.emb_channels = channels, emb_channels
        self.out_channels = out_channels or channels
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(),
                                       nn.Conv2d(channels, self.out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, self.out_channels))
        self.out_layers = nn.Sequential(normalization(self.out_channels), nn.SiLU(), nn.Dropout(p=dropout),
                                        nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1))
        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x, emb):
        return checkpoint(self._forward, (x, emb), self.parameters(), self.use_checkpoint)

    def _forward(self, x, emb):
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)
        while len(emb_out.shape) < len(h.shape):
            emb_out = emb_out[..., None]
        h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class UNetModel(nn.Module):
    def __init__(self, in_channels=4, model_channels=16, out_channels=4, num_heads=2, context_dim=32,
                 use_checkpoint=False):
        super().__init__()
        ch, time_embed_dim = model_channels, model_channels * 4
        self.in_channels, self.model_channels, self.out_channels = in_channels, model_channels, out_channels
        self.num_heads = num_heads
        self.dtype = torch.float32
        d_head = ch // num_heads

        def res(c_in, c_out=None):
            return ResBlock(c_in, time_embed_dim, out_channels=c_out, use_checkpoint=use_checkpoint)

        def attn():
            return SpatialTransformer(ch, num_heads, d_head, context_dim=context_dim, use_checkpoint=use_checkpoint)

        self.time_embed = nn.Sequential(nn.Linear(ch, time_embed_dim), nn.SiLU(),
                                        nn.Linear(time_embed_dim, time_embed_dim))
        self.input_blocks = nn.ModuleList([
            TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1)),
            TimestepEmbedSequential(res(ch), attn()),
        ])
        self.middle_block = TimestepEmbedSequential(res(ch), attn(), res(ch))
        self.output_blocks = nn.ModuleList([
            TimestepEmbedSequential(res(2 * ch, ch), attn()),
            TimestepEmbedSequential(res(2 * ch, ch)),
        ])
        self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

    def forward(self, x, timesteps=None, context=None, y=None, **kwargs):
        hs = []
        t_emb = timestep_embedding(timesteps, self.model_channels, repeat_only=False).to(x.dtype)
        emb = self.time_embed(t_emb)
        h = x
        for module in self.input_blocks:
            h = module(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        for module in self.output_blocks:
            h = torch.cat([h, hs.pop()], dim=1)
            h = module(h, emb, context)
        return self.out(h.type(x.dtype))
