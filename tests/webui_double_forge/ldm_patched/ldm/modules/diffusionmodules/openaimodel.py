"""ldm_patched/ldm/modules/diffusionmodules/openaimodel.py (Forge ``previous``): the UNet runs every block through
``forward_timestep_embed``, which calls ``transformer_options["block_inner_modifiers"]`` before and after each
layer (AnimateDiff forge/master inserts its motion modules there), and ``UNetModel.forward`` sets
``transformer_options["block"]`` and calls ``block_modifiers``. Toy sizes: 2 input blocks, a middle block and 2
output blocks with skip connections; ResBlock adds the timestep embedding out of place as upstream."""

import math

import torch
from ldm_patched.ldm.modules.attention import SpatialTransformer
from torch import nn


class TimestepBlock(nn.Module):
    pass


def forward_timestep_embed(ts, x, emb, context=None, transformer_options={}, output_shape=None, **kwargs):  # noqa: B006
    block_inner_modifiers = transformer_options.get("block_inner_modifiers", [])
    for layer_index, layer in enumerate(ts):
        for modifier in block_inner_modifiers:
            x = modifier(x, "before", layer, layer_index, ts, transformer_options)
        if isinstance(layer, TimestepBlock):
            x = layer(x, emb)
        elif isinstance(layer, SpatialTransformer):
            x = layer(x, context, transformer_options)
            if "transformer_index" in transformer_options:
                transformer_options["transformer_index"] += 1
        else:
            x = layer(x)
        for modifier in block_inner_modifiers:
            x = modifier(x, "after", layer, layer_index, ts, transformer_options)
    return x


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    def forward(self, *args, **kwargs):
        return forward_timestep_embed(self, *args, **kwargs)


class ResBlock(TimestepBlock):
    def __init__(self, channels, emb_channels, out_channels=None):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(nn.GroupNorm(4, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(nn.GroupNorm(4, out_channels), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        h = h + emb_out
        h = self.out_layers(h)
        return self.skip_connection(x) + h


def timestep_embedding(timesteps, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class UNetModel(nn.Module):
    def __init__(self, in_channels=4, model_channels=16, out_channels=4, context_dim=32, num_heads=2, dtype=torch.float32):
        super().__init__()
        ch, emb = model_channels, model_channels * 4
        self.model_channels, self.dtype = ch, dtype
        d_head = ch // num_heads
        self.time_embed = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.input_blocks = nn.ModuleList([
            TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1)),
            TimestepEmbedSequential(ResBlock(ch, emb), SpatialTransformer(ch, num_heads, d_head, context_dim=context_dim)),
        ])
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, emb), SpatialTransformer(ch, num_heads, d_head, context_dim=context_dim), ResBlock(ch, emb))
        self.output_blocks = nn.ModuleList([
            TimestepEmbedSequential(ResBlock(2 * ch, emb, ch), SpatialTransformer(ch, num_heads, d_head, context_dim=context_dim)),
            TimestepEmbedSequential(ResBlock(2 * ch, emb, ch)),
        ])
        self.out = nn.Sequential(nn.GroupNorm(4, ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

    def forward(self, x, timesteps=None, context=None, y=None, control=None, transformer_options={}, **kwargs):  # noqa: B006
        transformer_options["original_shape"] = list(x.shape)
        transformer_options["transformer_index"] = 0
        block_modifiers = transformer_options.get("block_modifiers", [])
        hs = []
        t_emb = timestep_embedding(timesteps, self.model_channels).to(x.dtype)
        emb = self.time_embed(t_emb)
        h = x
        for index, module in enumerate(self.input_blocks):
            transformer_options["block"] = ("input", index)
            for block_modifier in block_modifiers:
                h = block_modifier(h, "before", transformer_options)
            h = forward_timestep_embed(module, h, emb, context, transformer_options)
            for block_modifier in block_modifiers:
                h = block_modifier(h, "after", transformer_options)
            hs.append(h)
        transformer_options["block"] = ("middle", 0)
        for block_modifier in block_modifiers:
            h = block_modifier(h, "before", transformer_options)
        h = forward_timestep_embed(self.middle_block, h, emb, context, transformer_options)
        for block_modifier in block_modifiers:
            h = block_modifier(h, "after", transformer_options)
        for index, module in enumerate(self.output_blocks):
            transformer_options["block"] = ("output", index)
            h = torch.cat([h, hs.pop()], dim=1)
            for block_modifier in block_modifiers:
                h = block_modifier(h, "before", transformer_options)
            h = forward_timestep_embed(module, h, emb, context, transformer_options)
            for block_modifier in block_modifiers:
                h = block_modifier(h, "after", transformer_options)
        transformer_options["block"] = ("last", 0)
        for block_modifier in block_modifiers:
            h = block_modifier(h, "before", transformer_options)
        h = self.out(h)
        for block_modifier in block_modifiers:
            h = block_modifier(h, "after", transformer_options)
        return h.type(x.dtype)
