"""ldm_patched/modules/model_base.py: ``BaseModel.apply_model`` scales the input by sigma, runs the UNet with its
``transformer_options`` and returns the DENOISED latent (x0), whatever the sampler."""

from types import SimpleNamespace

import torch
from ldm_patched.ldm.modules.diffusionmodules.openaimodel import UNetModel
from ldm_patched.modules.latent_formats import SD15
from ldm_patched.modules.model_sampling import ModelSampling


def sd15_config():
    return SimpleNamespace(unet_config={}, latent_format=SD15(), manual_cast_dtype=None)


class BaseModel(torch.nn.Module):
    def __init__(self, model_config, device=None):
        super().__init__()
        self.latent_format = model_config.latent_format
        self.model_config = model_config
        self.manual_cast_dtype = model_config.manual_cast_dtype
        self.diffusion_model = UNetModel(**model_config.unet_config)
        self.model_sampling = ModelSampling(model_config)

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):  # noqa: B006  (upstream's signature)
        from ldm_patched.modules import model_management

        model_management.check_loaded(self)  # the double's stand-in for weights left on the offload device
        sigma = t
        xc = self.model_sampling.calculate_input(sigma, x)
        if c_concat is not None:
            xc = torch.cat([xc, c_concat], dim=1)
        context = c_crossattn
        dtype = self.get_dtype()
        xc = xc.to(dtype)
        t = self.model_sampling.timestep(t).float()
        context = context.to(dtype)
        model_output = self.diffusion_model(xc, t, context=context, control=control,
                                            transformer_options=transformer_options, **kwargs).float()
        return self.model_sampling.calculate_denoised(sigma, model_output, x)

    def get_dtype(self):
        return self.diffusion_model.dtype

    def memory_required(self, input_shape):
        area = input_shape[0] * input_shape[2] * input_shape[3]
        return area * 4 * 1024
