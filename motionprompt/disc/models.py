"""Flow discriminators: normalized flow [B,2,H,W] -> "real motion" logit [B].

Architectures live in a registry so checkpoints can name them; each keeps the keyword arguments it
was built with in ``self.config`` (JSON-serializable) so a checkpoint can rebuild it exactly.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES: dict[str, type[nn.Module]] = {}


def register(name: str):
    def deco(cls):
        cls.arch = name
        ARCHITECTURES[name] = cls
        return cls

    return deco


def _remember_config(module: nn.Module, frame) -> None:
    args = inspect.getargvalues(frame)
    module.config = {k: args.locals[k] for k in args.args if k != "self"}


@register("cnn")
class FlowCNN(nn.Module):
    """Compact CNN trained from scratch (default): strided convs, GroupNorm, global pooling.

    Resolution-agnostic and cheap on CPU; ``input_scale`` brings normalized flow (a few percent of the
    frame) to O(1) activations.
    """

    def __init__(self, width: int = 32, depth: int = 4, input_scale: float = 10.0):
        super().__init__()
        _remember_config(self, inspect.currentframe())
        self.input_scale = input_scale
        layers: list[nn.Module] = []
        ch_in = 2
        for i in range(depth):
            ch_out = width * min(2**i, 8)
            layers += [nn.Conv2d(ch_in, ch_out, 3, stride=2, padding=1), nn.GroupNorm(min(8, ch_out), ch_out), nn.SiLU()]
            ch_in = ch_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * ch_in, ch_in), nn.SiLU(), nn.Linear(ch_in, 1))

    def forward(self, flow: torch.Tensor) -> torch.Tensor:
        h = self.features(flow * self.input_scale)
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return self.head(pooled).squeeze(1)


@register("vit")
class FlowViT(nn.Module):
    """The paper's shape: a projection of the 2-channel flow into a torchvision ViT, 3-layer MLP head.

    Defaults are ViT-B/16 at 224 px so ImageNet weights (``load_backbone``) fit; tests use tiny sizes.
    """

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        num_layers: int = 12,
        num_heads: int = 12,
        hidden_dim: int = 768,
        mlp_dim: int = 3072,
        head_dim: int = 256,
        input_scale: float = 10.0,
    ):
        super().__init__()
        _remember_config(self, inspect.currentframe())
        from torchvision.models.vision_transformer import VisionTransformer

        self.input_scale = input_scale
        self.image_size = image_size
        self.project = nn.Conv2d(2, 3, kernel_size=1)
        self.backbone = VisionTransformer(image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim)
        self.backbone.heads = nn.Identity()
        self.head = nn.Sequential(
            nn.Linear(hidden_dim, head_dim), nn.GELU(), nn.Linear(head_dim, head_dim), nn.GELU(), nn.Linear(head_dim, 1)
        )

    def load_backbone(self, path: str) -> None:
        """Load torchvision ViT weights (e.g. vit_b_16 ImageNet) from a local .pth, weights only."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("heads.")}
        missing, unexpected = self.backbone.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith("heads.")]:
            raise ValueError(f"{path} does not match this ViT: missing={missing[:5]}, unexpected={unexpected[:5]}")

    def forward(self, flow: torch.Tensor) -> torch.Tensor:
        x = self.project(flow * self.input_scale)
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return self.head(self.backbone(x)).squeeze(1)


def build_discriminator(arch: str = "cnn", **config) -> nn.Module:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown discriminator architecture {arch!r}; available: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**config)
