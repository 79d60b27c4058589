"""The toy text-to-video model: the reference host's architecture family at toy size.

diffusers ``UNetMotionModel`` (motion layers in every block) + ``AutoencoderKL`` (4x down, 32 px frames
-> 8x8x4 latents) + transformers ``CLIPTextModel`` over the word tokenizer, so guidance on it runs the
production path. Weights live in one safetensors file per model (keys prefixed ``unet.``, ``vae.``,
``text.``), with the architecture and latent statistics in its metadata: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..hosts.diffusers.models import VideoModel, ddim_scheduler
from ..hosts.diffusers.tokenizer import WordTokenizer, layout

FORMAT = "motionprompt-toy-video-model"
SHIPPED = Path(__file__).with_name("weights") / "toy_model.safetensors"


@dataclass
class ToyArch:
    size: int = 32  # frame side in pixels
    frames: int = 16
    vocab_size: int = 1024  # 1000 made "bouncing" and "red" collide (tests check the world vocabulary)
    max_length: int = 32  # tokens per caption chunk (BOS + words + learnable tokens + EOS + padding)
    text_width: int = 64
    text_layers: int = 2
    unet_channels: tuple[int, ...] = (32, 64, 128)
    vae_channels: tuple[int, ...] = (32, 64, 64)
    scaling_factor: float = 1.0  # set after VAE training so latents have unit variance
    shift_factor: float = 0.0  # ... and zero mean (diffusers' convention: z = (mean - shift) * scale)
    prediction_type: str = "epsilon"  # or "v_prediction", which comes with a zero-terminal-SNR schedule

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unet_channels"], d["vae_channels"] = list(self.unet_channels), list(self.vae_channels)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> ToyArch:
        known = set(cls.__dataclass_fields__)
        d = {k: v for k, v in data.items() if k in known}
        for k in ("unet_channels", "vae_channels"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


@dataclass
class ToyParts:
    arch: ToyArch
    unet: torch.nn.Module
    vae: torch.nn.Module
    text: torch.nn.Module
    tokenizer: WordTokenizer
    meta: dict = field(default_factory=dict)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, "vae": self.vae, "text": self.text}

    def caption_ids(self, captions: list[str]) -> torch.Tensor:
        """Token ids [B, max_length] of captions without learnable tokens (training and plain sampling)."""
        tok = self.tokenizer
        return torch.tensor([layout(tok, tok.ids(c), 0)[0] for c in captions])

    def scheduler(self):
        """The noise schedule this model was trained on (the trainer, the sampler and the host all use it)."""
        v = self.arch.prediction_type == "v_prediction"
        return ddim_scheduler(self.arch.prediction_type, zero_snr=v)

    def video_model(self) -> VideoModel:
        for m in self.modules().values():
            m.eval()
        return VideoModel(self.unet, self.vae, self.text, self.tokenizer, self.scheduler(), name="toy")


def build(arch: ToyArch, seed: int = 0) -> ToyParts:
    from diffusers import AutoencoderKL, UNetMotionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tok = WordTokenizer(vocab_size=arch.vocab_size, max_length=arch.max_length)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=tok.vocab_size, hidden_size=arch.text_width, intermediate_size=4 * arch.text_width,
        num_hidden_layers=arch.text_layers, num_attention_heads=4, max_position_embeddings=arch.max_length,
        bos_token_id=tok.bos, eos_token_id=tok.eos, pad_token_id=tok.pad,
    ))
    latent = arch.size // 2 ** (len(arch.vae_channels) - 1)
    n = len(arch.unet_channels)
    unet = UNetMotionModel(
        sample_size=latent, block_out_channels=arch.unet_channels, layers_per_block=1, norm_num_groups=16,
        down_block_types=("CrossAttnDownBlockMotion",) * (n - 1) + ("DownBlockMotion",),
        up_block_types=("UpBlockMotion",) + ("CrossAttnUpBlockMotion",) * (n - 1),
        cross_attention_dim=arch.text_width, num_attention_heads=4, motion_num_attention_heads=4,
        motion_max_seq_length=32,
    )
    vae = AutoencoderKL(
        block_out_channels=arch.vae_channels, down_block_types=("DownEncoderBlock2D",) * len(arch.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(arch.vae_channels), latent_channels=4, norm_num_groups=16,
        layers_per_block=1, sample_size=arch.size, scaling_factor=arch.scaling_factor,
        shift_factor=arch.shift_factor,
    )
    return ToyParts(arch, unet, vae, text, tok)


def set_latent_stats(parts: ToyParts, mean: float, std: float) -> None:
    parts.arch.shift_factor, parts.arch.scaling_factor = float(mean), float(1.0 / std)
    parts.vae.register_to_config(shift_factor=parts.arch.shift_factor, scaling_factor=parts.arch.scaling_factor)


def state_tensors(parts: ToyParts, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    out = {}
    for prefix, module in parts.modules().items():
        for k, v in module.state_dict().items():
            v = v.detach().cpu()
            out[f"{prefix}.{k}"] = (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
    return out


def load_tensors(parts: ToyParts, tensors: dict[str, torch.Tensor], prefix: str = "") -> None:
    for name, module in parts.modules().items():
        head = f"{prefix}{name}."
        sd = {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}
        ref = module.state_dict()
        missing = set(ref) - set(sd)
        if missing:
            raise ValueError(f"{name}: {len(missing)} weight(s) missing, e.g. {sorted(missing)[:3]}")
        module.load_state_dict({k: v.to(ref[k].dtype) for k, v in sd.items() if k in ref}, strict=True)


def save_model(parts: ToyParts, path: str | os.PathLike, meta: dict | None = None,
               dtype: torch.dtype = torch.float16) -> Path:
    from ..files.atomic import save_safetensors

    metadata = {"format": FORMAT, "arch": json.dumps(parts.arch.to_dict()), "meta": json.dumps(meta or parts.meta)}
    return save_safetensors(state_tensors(parts, dtype), metadata, path)


def model_file(spec: str | os.PathLike) -> Path:
    """``"toy"`` (the CLI's name for the shipped model) or a path -> the weights file."""
    return SHIPPED if spec == "toy" else Path(spec)


class ToyModelError(ValueError):
    pass


def load_model(path: str | os.PathLike = SHIPPED, device: str | torch.device = "cpu") -> ToyParts:
    """Weights file -> fp32 parts in eval mode; a clear error for a missing or foreign file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ToyModelError(f"toy model not found: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ToyModelError(f"{path} is not a toy model file (format {metadata.get('format')!r})")
        arch = ToyArch.from_dict(json.loads(metadata["arch"]))
        tensors = load_file(str(path))
    except ToyModelError:
        raise
    except Exception as exc:  # safetensors' own error type differs between versions
        raise ToyModelError(f"cannot read toy model {path}: {exc}") from exc
    parts = build(arch)
    load_tensors(parts, tensors)
    parts.meta = json.loads(metadata.get("meta", "{}"))
    for m in parts.modules().values():
        m.to(device).float().eval()
    return parts
