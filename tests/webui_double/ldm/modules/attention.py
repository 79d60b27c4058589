"""ldm/modules/attention.py (Stability-AI/stablediffusion, as A1111 1.10 loads it): ``CrossAttention``, ``GEGLU`` /
``FeedForward``, ``BasicTransformerBlock`` and ``SpatialTransformer``.

Unlike ldm_patched (the Forge double), ldm's ``BasicTransformerBlock._forward`` adds its residuals out of place
(``x = self.attn1(self.norm1(x)) + x``), so a plain backward through A1111's UNet works. ``checkpoint`` is
``use_checkpoint`` from the config, False in A1111's ``v1-inference.yaml``. A1111 swaps ``CrossAttention.forward``
for its cross-attention optimization (sd_hijack_optimizations); every one computes softmax(q k^T / sqrt(d)) v, as
here. Toy sizes; the feed-forward multiplier is 2 (upstream 4)."""

import torch
from ldm.modules.diffusionmodules.util import checkpoint
from torch import nn


class CrossAttention(nn.Module):
    def __init__(self, query_dim, context_dim=None, heads=2, dim_head=8, dropout=0.0):
        super().__init__()
        inner_dim = dim_head * heads
        context_dim = query_dim if context_dim is None else context_dim
        self.scale = dim_head**-0.5
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Dropout(dropout))

    def forward(self, x, context=None, mask=None):
        h = self.heads
        q = self.to_q(x)
        context = x if context is None else context
        k, v = self.to_k(context), self.to_v(context)
        b = q.shape[0]
        q, k, v = (t.reshape(b, t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))  # 'b n (h d) -> b h n d'
        attn = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, x.shape[1], -1)
        return self.to_out(out)


class GEGLU(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * nn.functional.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim, mult=2, glu=True, dropout=0.0):
        super().__init__()
        inner_dim = dim * mult
        project_in = GEGLU(dim, inner_dim) if glu else nn.Sequential(nn.Linear(dim, inner_dim), nn.GELU())
        self.net = nn.Sequential(project_in, nn.Dropout(dropout), nn.Linear(inner_dim, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, n_heads, d_head, dropout=0.0, context_dim=None, gated_ff=True, checkpoint=False,
                 disable_self_attn=False):
        super().__init__()
        self.disable_self_attn = disable_self_attn
        self.attn1 = CrossAttention(dim, heads=n_heads, dim_head=d_head, dropout=dropout,
                                    context_dim=context_dim if disable_self_attn else None)
        self.ff = FeedForward(dim, dropout=dropout, glu=gated_ff)
        self.attn2 = CrossAttention(dim, context_dim=context_dim, heads=n_heads, dim_head=d_head, dropout=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.checkpoint = checkpoint

    def forward(self, x, context=None):
        return checkpoint(self._forward, (x, context), self.parameters(), self.checkpoint)

    def _forward(self, x, context=None):
        x = self.attn1(self.norm1(x), context=context if self.disable_self_attn else None) + x
        x = self.attn2(self.norm2(x), context=context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """SD1.5 layout (``use_linear=False``): GroupNorm, 1x1 conv in, blocks over (h w) tokens, 1x1 conv out, + x_in.
    Upstream zero-initialises ``proj_out``; the toy keeps random weights so the block does something."""

    def __init__(self, in_channels, n_heads, d_head, depth=1, dropout=0.0, context_dim=None, use_checkpoint=False):
        super().__init__()
        if context_dim is not None and not isinstance(context_dim, list):
            context_dim = [context_dim]
        inner_dim = n_heads * d_head
        self.in_channels = in_channels
        self.norm = nn.GroupNorm(num_groups=4, num_channels=in_channels, eps=1e-6, affine=True)  # Normalize: 32 groups
        self.proj_in = nn.Conv2d(in_channels, inner_dim, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner_dim, n_heads, d_head, dropout=dropout, context_dim=context_dim[d],
                                   checkpoint=use_checkpoint) for d in range(depth)])
        self.proj_out = nn.Conv2d(inner_dim, in_channels, kernel_size=1)

    def forward(self, x, context=None):
        if not isinstance(context, list):
            context = [context]
        b, _c, h, w = x.shape
        x_in = x
        x = self.proj_in(self.norm(x))
        x = x.permute(0, 2, 3, 1).reshape(b, h * w, -1)  # rearrange 'b c h w -> b (h w) c'
        for i, block in enumerate(self.transformer_blocks):
            x = block(x, context=context[i])
        x = x.reshape(b, h, w, -1).permute(0, 3, 1, 2)  # 'b (h w) c -> b c h w'
        return self.proj_out(x) + x_in
