"""ldm_patched/ldm/modules/attention.py (Forge ``previous``): CrossAttention, BasicTransformerBlock and
SpatialTransformer. ``BasicTransformerBlock._forward`` adds its residuals IN PLACE (``x += n``) after
``norm1(x)``/``norm2(x)`` saved x for backward — what makes a plain backward through Forge's UNet fail with
"one of the variables needed for gradient computation has been modified by an inplace operation".
Toy sizes; the feed-forward is Linear-GELU-Linear (upstream GEGLU); ``checkpoint`` is off in ldm_patched's
configs (``use_checkpoint=False``), so ``forward`` calls ``_forward`` directly as upstream's helper then does."""

import torch
from torch import nn


class CrossAttention(nn.Module):
    def __init__(self, query_dim, context_dim=None, heads=2, dim_head=8):
        super().__init__()
        inner_dim = dim_head * heads
        context_dim = query_dim if context_dim is None else context_dim
        self.heads, self.dim_head = heads, dim_head
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Dropout(0.0))

    def forward(self, x, context=None, value=None, mask=None, transformer_options=None):
        q = self.to_q(x)
        context = x if context is None else context
        k = self.to_k(context)
        v = self.to_v(value if value is not None else context)
        b, n, _ = q.shape
        q, k, v = (t.reshape(b, -1, self.heads, self.dim_head).transpose(1, 2) for t in (q, k, v))
        attn = torch.softmax(q @ k.transpose(-1, -2) / self.dim_head**0.5, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, self.heads * self.dim_head)
        return self.to_out(out)


class FeedForward(nn.Module):
    def __init__(self, dim, mult=2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, n_heads, d_head, context_dim=None):
        super().__init__()
        inner_dim = n_heads * d_head
        self.is_res = inner_dim == dim
        self.attn1 = CrossAttention(inner_dim, heads=n_heads, dim_head=d_head)
        self.ff = FeedForward(inner_dim)
        self.attn2 = CrossAttention(inner_dim, context_dim=context_dim, heads=n_heads, dim_head=d_head)
        self.norm1 = nn.LayerNorm(inner_dim)
        self.norm2 = nn.LayerNorm(inner_dim)
        self.norm3 = nn.LayerNorm(inner_dim)
        self.checkpoint = False
        self.n_heads, self.d_head = n_heads, d_head

    def forward(self, x, context=None, transformer_options={}):  # noqa: B006
        return self._forward(x, context, transformer_options)

    def _forward(self, x, context=None, transformer_options={}):  # noqa: B006
        extra_options = {k: v for k, v in transformer_options.items() if k not in ("patches", "patches_replace")}
        extra_options["n_heads"], extra_options["dim_head"] = self.n_heads, self.d_head
        n = self.norm1(x)
        n = self.attn1(n, context=None, value=None, transformer_options=extra_options)
        x += n
        n = self.norm2(x)
        n = self.attn2(n, context=context, value=None, transformer_options=extra_options)
        x += n
        if self.is_res:
            x_skip = x
        x = self.ff(self.norm3(x))
        if self.is_res:
            x += x_skip
        return x


class SpatialTransformer(nn.Module):
    """SD1.5 layout (``use_linear=False``): GroupNorm, 1x1 conv in, blocks over (h w) tokens, 1x1 conv out, + x_in."""

    def __init__(self, in_channels, n_heads, d_head, depth=1, context_dim=None):
        super().__init__()
        inner_dim = n_heads * d_head
        self.norm = nn.GroupNorm(num_groups=4, num_channels=in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(in_channels, inner_dim, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner_dim, n_heads, d_head, context_dim=context_dim) for _ in range(depth)])
        self.proj_out = nn.Conv2d(inner_dim, in_channels, kernel_size=1)

    def forward(self, x, context=None, transformer_options={}):  # noqa: B006
        if not isinstance(context, list):
            context = [context] * len(self.transformer_blocks)
        b, _c, h, w = x.shape
        x_in = x
        x = self.proj_in(self.norm(x))
        x = x.permute(0, 2, 3, 1).reshape(b, h * w, -1).contiguous()  # rearrange 'b c h w -> b (h w) c'
        for i, block in enumerate(self.transformer_blocks):
            transformer_options["block_index"] = i
            x = block(x, context=context[i], transformer_options=transformer_options)
        x = x.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
        return self.proj_out(x) + x_in
