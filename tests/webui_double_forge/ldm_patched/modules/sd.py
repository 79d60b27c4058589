"""ldm_patched/modules/sd.py (Forge ``previous``): the CLIP and VAE objects of ``forge_objects``. Each owns a
``ModelPatcher`` that ``model_management`` loads on demand; ``VAE.decode`` loads its patcher and returns images
in [0, 1], channels last (``decode_inner``)."""

import torch
from ldm_patched.modules import model_management, model_patcher


class CLIP:
    def __init__(self, cond_stage_model, tokenizer=None):
        self.cond_stage_model = cond_stage_model
        self.tokenizer = tokenizer
        self.patcher = model_patcher.ModelPatcher(self.cond_stage_model,
                                                  load_device=model_management.text_encoder_device(),
                                                  offload_device=model_management.text_encoder_offload_device())


class VAE:
    def __init__(self, first_stage_model):
        self.first_stage_model = first_stage_model.eval()
        self.device = model_management.vae_device()
        self.vae_dtype = model_management.vae_dtype()
        self.first_stage_model.to(self.vae_dtype)
        self.output_device = torch.device("cpu")
        self.patcher = model_patcher.ModelPatcher(self.first_stage_model, load_device=self.device,
                                                  offload_device=model_management.vae_offload_device())

    def decode(self, samples_in):
        model_management.load_models_gpu([self.patcher])
        decoded = self.first_stage_model.decode(samples_in.to(self.vae_dtype).to(self.device)).to(self.output_device)
        return torch.clamp((decoded.float() + 1.0) / 2.0, min=0.0, max=1.0).movedim(1, -1)
