"""Building the reference model: tiny random components for tests/demo, or a diffusers folder."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .tokenizer import HFTokenizer, WordTokenizer


@dataclass
class VideoModel:
    unet: torch.nn.Module  # diffusers UNetMotionModel
    vae: torch.nn.Module  # diffusers AutoencoderKL
    text_encoder: torch.nn.Module  # transformers CLIPTextModel
    tokenizer: object  # WordTokenizer | HFTokenizer
    scheduler: object  # diffusers DDIMScheduler
    name: str = "tiny"

    @property
    def latent_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def ddim_scheduler(prediction_type: str = "epsilon", zero_snr: bool = False):
    """AnimateDiff's published sampling setup: DDIM, linear betas 0.00085 -> 0.012.

    ``zero_snr`` rescales the betas so the last step is pure noise, as sampling assumes (Lin et al. 2024,
    "Common Diffusion Noise Schedules and Sample Steps Are Flawed"), with the trailing timesteps that paper
    samples with; it needs v-prediction (epsilon carries no information at zero SNR).
    """
    from diffusers import DDIMScheduler

    if zero_snr and prediction_type == "epsilon":
        raise ValueError("a zero-terminal-SNR schedule needs v_prediction (epsilon says nothing at zero SNR)")
    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=0 if zero_snr else 1,
        timestep_spacing="trailing" if zero_snr else "linspace",
        prediction_type=prediction_type, rescale_betas_zero_snr=zero_snr,
    )


def tiny_model(seed: int = 0) -> VideoModel:
    """Random tiny AnimateDiff-shaped model (8x8 latents -> 64 px frames). Untrained: noise in, noise out."""
    from diffusers import AutoencoderKL, UNetMotionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tok = WordTokenizer(vocab_size=1000, max_length=77)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, bos_token_id=tok.bos, eos_token_id=tok.eos,
        pad_token_id=tok.pad,
    ))
    unet = UNetMotionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"),
        up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion"),
        cross_attention_dim=32, num_attention_heads=2, motion_num_attention_heads=2, motion_max_seq_length=32,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=8, sample_size=64,
    )
    for m in (unet, vae, text):
        m.eval()
    return VideoModel(unet, vae, text, tok, ddim_scheduler(), name="tiny")


def sd15_random_model(seed: int = 0, motion_layers: bool = True) -> VideoModel:
    """Random weights in the real shapes: SD1.5 UNet (320/640/1280/1280, cross-attention 768) with
    AnimateDiff v2-style motion modules (8 heads, 32 positions, motion mid block), the SD VAE
    (128/256/512/512, scaling 0.18215) and a CLIP ViT-L/14-sized text model (768 wide, 12 layers).

    Built in code, nothing downloaded: ~1.3 B UNet + 84 M VAE + 123 M text parameters, ~6 GB in fp32.
    For cost measurements (``python -m motionprompt bench``); its samples are noise. ``motion_layers``
    False keeps the UNetMotionModel but with a single short motion layer per block (not SD1.5-sized).
    """
    from diffusers import AutoencoderKL, UNetMotionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tok = WordTokenizer(vocab_size=49408, max_length=77)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=tok.vocab_size, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
        bos_token_id=tok.bos, eos_token_id=tok.eos, pad_token_id=tok.pad,
    ))
    unet = UNetMotionModel(
        sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
        down_block_types=("CrossAttnDownBlockMotion",) * 3 + ("DownBlockMotion",),
        up_block_types=("UpBlockMotion",) + ("CrossAttnUpBlockMotion",) * 3,
        cross_attention_dim=768, num_attention_heads=8, norm_num_groups=32,
        motion_num_attention_heads=8 if motion_layers else 1, motion_max_seq_length=32,
        use_motion_mid_block=motion_layers,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4, norm_num_groups=32, sample_size=512, scaling_factor=0.18215,
    )
    for m in (unet, vae, text):
        m.eval()
    return VideoModel(unet, vae, text, tok, ddim_scheduler(), name="sd15-random")

def load_model(folder: str | os.PathLike, motion_adapter: str | None = None) -> VideoModel:
    """A diffusers AnimateDiff folder (unet = UNetMotionModel), or an SD1.5 folder plus a motion adapter (a MotionAdapter
    folder or an AnimateDiff motion module file, ``load_motion_adapter``)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel, UNetMotionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = os.fspath(folder)
    if motion_adapter:
        unet2d = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
        unet = UNetMotionModel.from_unet2d(unet2d, load_motion_adapter(motion_adapter))
    else:
        unet = UNetMotionModel.from_pretrained(folder, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    text = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    tok = HFTokenizer(CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"))
    try:
        sched = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    except (OSError, ValueError):
        sched = ddim_scheduler()
    for m in (unet, vae, text):
        m.eval()
    return VideoModel(unet, vae, text, tok, sched, name=os.path.basename(folder.rstrip("/")))


def load_single_file(checkpoint: str | os.PathLike, motion_adapter: str | os.PathLike,
                     config: str | os.PathLike) -> VideoModel:
    """A single-file SD1.5 checkpoint (LDM keys, the WebUI's models/Stable-diffusion) with an AnimateDiff motion module
    (a ``.safetensors`` file or a diffusers MotionAdapter folder), through diffusers' single-file loaders, offline:
    ``config`` is a local folder of SD1.5's diffusers configs and CLIP tokenizer (no weights), so nothing is fetched.
    Sampling uses DDIM with AnimateDiff's published betas (``ddim_scheduler``), not SD1.5's scaled-linear ones."""
    from diffusers import StableDiffusionPipeline, UNetMotionModel

    pipe = StableDiffusionPipeline.from_single_file(
        os.fspath(checkpoint), config=os.fspath(config), local_files_only=True, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    adapter = load_motion_adapter(motion_adapter)
    if tuple(adapter.config.block_out_channels) != tuple(pipe.unet.config.block_out_channels):
        raise ValueError(f"motion module {os.fspath(motion_adapter)} has blocks of {list(adapter.config.block_out_channels)} "
                         f"channels, the checkpoint's UNet {list(pipe.unet.config.block_out_channels)}: not a motion "
                         "module for this model (an SDXL one?)")
    unet = UNetMotionModel.from_unet2d(pipe.unet, adapter)
    for m in (unet, pipe.vae, pipe.text_encoder):
        m.eval()
    return VideoModel(unet, pipe.vae, pipe.text_encoder, HFTokenizer(pipe.tokenizer), ddim_scheduler(),
                      name=os.path.splitext(os.path.basename(os.fspath(checkpoint)))[0])


def motion_adapter_config(path: str | os.PathLike) -> dict:
    """A ``MotionAdapter`` config read off an AnimateDiff motion module file's header (keys and shapes only): block
    widths, motion layers per block, transformer layers, the mid block, the positional-encoding length. Heads (8) and
    norm groups (32) are not in the weights: every SD1.5 module (v1, v2, v3) uses those."""
    import re

    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118  safe_open has no __iter__
    if any(k.startswith("controlnet_cond_embedding") for k in shapes):
        raise ValueError(f"{os.fspath(path)} is a SparseCtrl module, not a motion module")

    def indices(pattern: str) -> list[int]:
        return sorted({int(m.group(1)) for k in shapes if (m := re.match(pattern, k))})

    blocks = indices(r"down_blocks\.(\d+)\.motion_modules\.")
    if not blocks:
        raise ValueError(f"{os.fspath(path)}: no down_blocks.*.motion_modules.* weights (not an AnimateDiff motion module)")
    widths = [shapes[f"down_blocks.{i}.motion_modules.0.temporal_transformer.norm.weight"][0] for i in blocks]
    pe = [s for k, s in shapes.items() if k.endswith("pos_encoder.pe")]
    mid = indices(r"mid_block\.motion_modules\.(\d+)\.")
    cfg = {
        "block_out_channels": widths,
        "motion_layers_per_block": len(indices(r"down_blocks\.0\.motion_modules\.(\d+)\.")),
        "motion_transformer_layers_per_block": len(indices(
            r"down_blocks\.0\.motion_modules\.0\.temporal_transformer\.transformer_blocks\.(\d+)\.")),
        "motion_num_attention_heads": 8,
        "motion_norm_num_groups": 32,
        "motion_max_seq_length": pe[0][1] if pe else 32,
        "use_motion_mid_block": bool(mid),
    }
    if mid:
        cfg["motion_mid_block_layers_per_block"] = len(mid)
        cfg["motion_transformer_layers_per_mid_block"] = len(indices(
            r"mid_block\.motion_modules\.0\.temporal_transformer\.transformer_blocks\.(\d+)\."))
    return cfg


def load_motion_adapter(path: str | os.PathLike):
    """A diffusers ``MotionAdapter`` from a MotionAdapter folder, or from an AnimateDiff motion module ``.safetensors``
    through ``MotionAdapter.from_single_file`` with the config read off its header (``motion_adapter_config``):
    offline, nothing fetched."""
    import json
    import tempfile

    from diffusers import MotionAdapter

    path = os.fspath(path)
    if os.path.isdir(path):
        return MotionAdapter.from_pretrained(path, local_files_only=True)
    cfg = motion_adapter_config(path)
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
            json.dump({"_class_name": "MotionAdapter", **cfg}, f)
        return MotionAdapter.from_single_file(path, config=folder, local_files_only=True)
