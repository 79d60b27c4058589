"""The model object Forge ``previous`` hands the WebUI (``modules_forge/forge_loader.py load_model_for_a1111``): an
A1111-shaped ``sd_model`` whose real parts live in ``forge_objects`` (UnetPatcher over ``BaseModel``, ``sd.CLIP``,
``sd.VAE``), with ``forge_objects_original`` / ``forge_objects_after_applying_lora`` shallow copies,
``first_stage_model`` = the VAE's, ``cond_stage_model`` = ``forge_clip.CLIP_SD_15_L`` over the CLIP's transformer
(A1111's EmbeddingsWithFixes on its token embedding), and ``decode_first_stage`` decorated ``torch.inference_mode``.
Built inside ``torch.no_grad`` like the loader, so weights are ordinary tensors until a move (model_management).
The text encoder is the A1111 double's toy; the UNet is ldm_patched's toy ``UNetModel``, the VAE ldm_patched's
``AutoencoderKL`` with the A1111 double's toy config (``VAE_DDCONFIG``)."""

from types import SimpleNamespace

import torch
from torch import nn

from ..webui_double.model import VAE_DDCONFIG, ToyTransformer, WordTokenizer


class ForgeObjects:
    def __init__(self, unet, clip, vae, clipvision=None):
        self.unet, self.clip, self.vae, self.clipvision = unet, clip, vae, clipvision

    def shallow_copy(self):
        return ForgeObjects(self.unet, self.clip, self.vae, self.clipvision)


class ClipModel(nn.Module):
    """Stands in for ldm_patched's SD1ClipModel: the module the CLIP patcher loads (it holds the transformer)."""

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer


class ForgeToySDModel(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        from ldm_patched.ldm.models.autoencoder import AutoencoderKL
        from ldm_patched.modules import model_management
        from ldm_patched.modules.model_base import BaseModel, sd15_config
        from ldm_patched.modules.sd import CLIP, VAE
        from modules import sd_hijack
        from modules_forge.forge_clip import CLIP_SD_15_L
        from modules_forge.unet_patcher import UnetPatcher

        with torch.no_grad():
            torch.manual_seed(seed)
            tok = WordTokenizer()
            transformer = ToyTransformer(tok.vocab + 2).requires_grad_(False)
            clip = CLIP(ClipModel(transformer))
            transformer.register_forward_pre_hook(lambda m, a, c=clip: model_management.check_loaded(c.cond_stage_model))
            emb = transformer.text_model.embeddings
            emb.token_embedding = sd_hijack.EmbeddingsWithFixes(emb.token_embedding, sd_hijack.model_hijack)
            self.cond_stage_model = CLIP_SD_15_L(SimpleNamespace(tokenizer=tok, transformer=transformer),
                                                 sd_hijack.model_hijack)
            base = BaseModel(sd15_config())  # UNet weights keep requires_grad=True, as ldm_patched leaves them
            unet = UnetPatcher(base, load_device=model_management.get_torch_device(),
                               offload_device=model_management.unet_offload_device())
            vae = VAE(AutoencoderKL(ddconfig=VAE_DDCONFIG, embed_dim=4))  # weights keep requires_grad=True
            self.forge_objects = ForgeObjects(unet, clip, vae)
            self.forge_objects_original = self.forge_objects.shallow_copy()
            self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
            self.first_stage_model = vae.first_stage_model
            self.model = SimpleNamespace(diffusion_model=base.diffusion_model)
            betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
            self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float())
            self.alphas_cumprod_original = self.alphas_cumprod
            self.num_timesteps = 1000
            self.parameterization = "eps"
            self.scale_factor = 0.18215
            self.cond_stage_key = "txt"
            self.is_sdxl, self.is_sd1, self.is_sd2 = False, True, False
        self.clip = self.cond_stage_model
        self.eval()
        from modules import sd_models

        sd_models.model_data.sd_model = self  # sd_models.load_model sets it, then computes the empty prompt's cond
        with torch.no_grad():
            self.cond_stage_model_empty_prompt = self.get_learned_conditioning([""])

    def get_learned_conditioning(self, prompts):
        return self.cond_stage_model(prompts)

    @torch.inference_mode()
    def decode_first_stage(self, x):
        sample = self.forge_objects.unet.model.model_config.latent_format.process_out(x)
        sample = self.forge_objects.vae.decode(sample).movedim(-1, 1) * 2.0 - 1.0
        return sample.to(x)

    def sampling_weights(self):
        """The UNet's and the injected motion module's parameters (what must never get a .grad)."""
        unet = self.forge_objects.unet
        modules = [unet.model, *(p.model for p in unet.extra_model_patchers_during_sampling)]
        return [w for m in modules for w in m.parameters()]
