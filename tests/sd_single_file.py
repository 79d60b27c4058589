"""A tiny SD1.5 in the WebUI's formats, built here (nothing downloaded): a single-file checkpoint in the LDM key layout
(``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*``), an AnimateDiff motion
module in the original layout (``*.temporal_transformer.*``, ``pos_encoder.pe``) and the ``--config`` folder
(SD1.5's diffusers layout: model_index.json and the component configs, a CLIP BPE tokenizer), plus the diffusers
components the files were written from, to compare a load against.

The diffusers -> LDM key mapping below is written for these tiny shapes and checked the only way that counts: the
files load through diffusers' own single-file converters into the same weights (tests/test_single_file.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

WIDTH = 32  # text width = cross-attention width


@dataclass
class TinySD15:
    checkpoint: Path
    motion_module: Path
    config: Path
    unet2d: object  # diffusers UNet2DConditionModel
    vae: object
    text_encoder: object
    adapter: object  # diffusers MotionAdapter


def _unet_to_ldm(sd: dict, layers: int, n_blocks: int, attn_down: set[int], attn_up: set[int]) -> dict:
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    resnet = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
              ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
    prefixes = {}
    for b in range(n_blocks):
        for j in range(layers):
            prefixes[f"down_blocks.{b}.resnets.{j}."] = f"input_blocks.{1 + b * (layers + 1) + j}.0."
            if b in attn_down:
                prefixes[f"down_blocks.{b}.attentions.{j}."] = f"input_blocks.{1 + b * (layers + 1) + j}.1."
        if b < n_blocks - 1:
            prefixes[f"down_blocks.{b}.downsamplers.0.conv."] = f"input_blocks.{(b + 1) * (layers + 1)}.0.op."
        for j in range(layers + 1):
            prefixes[f"up_blocks.{b}.resnets.{j}."] = f"output_blocks.{b * (layers + 1) + j}.0."
            if b in attn_up:
                prefixes[f"up_blocks.{b}.attentions.{j}."] = f"output_blocks.{b * (layers + 1) + j}.1."
        if b < n_blocks - 1:
            prefixes[f"up_blocks.{b}.upsamplers.0."] = \
                f"output_blocks.{b * (layers + 1) + layers}.{2 if b in attn_up else 1}."
    prefixes.update({"mid_block.resnets.0.": "middle_block.0.", "mid_block.attentions.0.": "middle_block.1.",
                     "mid_block.resnets.1.": "middle_block.2."})
    out = {}
    for key, value in sd.items():
        stem, _, leaf = key.rpartition(".")
        if stem in fixed:
            out[f"{fixed[stem]}.{leaf}"] = value
            continue
        prefix = next(p for p in prefixes if key.startswith(p))
        rest = key[len(prefix):]
        if ".resnets." in prefix:
            for new, old in resnet:
                rest = rest.replace(new, old)
        out[prefixes[prefix] + rest] = value
    return out


def _vae_to_ldm(sd: dict, n_blocks: int) -> dict:
    out = {}
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    for key, value in sd.items():
        k = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        parts = k.split(".")
        if parts[1] == "down_blocks":  # encoder.down_blocks.i.resnets.j / downsamplers.0
            i = parts[2]
            k = (f"encoder.down.{i}.block.{parts[4]}." + ".".join(parts[5:]) if parts[3] == "resnets"
                 else f"encoder.down.{i}.downsample." + ".".join(parts[5:]))
        elif parts[1] == "up_blocks":  # decoder.up_blocks.i: LDM numbers them from the bottom
            i = n_blocks - 1 - int(parts[2])
            k = (f"decoder.up.{i}.block.{parts[4]}." + ".".join(parts[5:]) if parts[3] == "resnets"
                 else f"decoder.up.{i}.upsample." + ".".join(parts[5:]))
        elif parts[1] == "mid_block" and parts[2] == "resnets":
            k = f"{parts[0]}.mid.block_{int(parts[3]) + 1}." + ".".join(parts[4:])
        elif parts[1] == "mid_block":  # attentions.0.<name>.<leaf>; LDM's are 1x1 convolutions
            name = ".".join(parts[4:-1])
            k = f"{parts[0]}.mid.attn_1.{attn[name]}.{parts[-1]}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        out[k] = value
    return out


def _motion_to_original(sd: dict, max_len: int) -> dict:
    out = {}
    for key, value in sd.items():
        if "pos_embed" in key:
            continue
        head, sep, tail = key.partition(".motion_modules.")
        index, _, rest = tail.partition(".")
        rest = (rest.replace("norm1", "norms.0").replace("norm2", "norms.1").replace("norm3", "ff_norm")
                .replace("attn1", "attention_blocks.0").replace("attn2", "attention_blocks.1"))
        out[f"{head}{sep}{index}.temporal_transformer.{rest}"] = value
        if rest.endswith("attention_blocks.0.to_q.weight"):  # the sinusoid AnimateDiff files carry (diffusers drops it)
            for a in (0, 1):
                pe_key = f"{head}{sep}{index}.temporal_transformer.{rest.split('attention_blocks.')[0]}" \
                         f"attention_blocks.{a}.pos_encoder.pe"
                out[pe_key] = torch.zeros(1, max_len, value.shape[0])
    return out


def _tokenizer_files(folder: Path) -> int:
    """A CLIP BPE tokenizer of single characters (every byte, alone and word-final) and CLIP's two special tokens."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]  # byte-level BPE's 256
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "do_lower_case": True,
        "tokenizer_class": "CLIPTokenizer"}), encoding="utf-8")
    return len(vocab)


def build(folder: Path, seed: int = 0) -> TinySD15:
    from diffusers import AutoencoderKL, MotionAdapter, PNDMScheduler, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    config = folder / "sd15-config"
    vocab = _tokenizer_files(config / "tokenizer")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=WIDTH, attention_head_dim=2)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8, sample_size=16)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab, hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1))
    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=8,
                            motion_norm_num_groups=32, motion_max_seq_length=32, use_motion_mid_block=True)
    with torch.no_grad():  # random norms and biases too, so a weight loaded into the wrong place shows
        for m in (unet, vae, text, adapter):
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    unet.save_config(config / "unet")
    vae.save_config(config / "vae")
    text.config.save_pretrained(config / "text_encoder")
    PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                  steps_offset=1).save_config(config / "scheduler")
    (config / "model_index.json").write_text(json.dumps({  # SD1.5's, safety checker included
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.6.0",
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]}), encoding="utf-8")
    weights = {f"model.diffusion_model.{k}": v for k, v in
               _unet_to_ldm(unet.state_dict(), 1, 2, attn_down={0}, attn_up={1}).items()}
    weights.update({f"first_stage_model.{k}": v for k, v in _vae_to_ldm(vae.state_dict(), 2).items()})
    weights.update({f"cond_stage_model.transformer.text_model.{k.removeprefix('text_model.')}": v
                    for k, v in text.state_dict().items()})  # transformers 5 names them without text_model.
    weights["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    weights["alphas_cumprod"] = torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2, 0)
    checkpoint = folder / "tiny-sd15.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, str(checkpoint))
    motion = folder / "mm_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in _motion_to_original(adapter.state_dict(), 32).items()}, str(motion))
    for m in (unet, vae, text, adapter):
        m.eval()
    return TinySD15(checkpoint, motion, config, unet, vae, text, adapter)
