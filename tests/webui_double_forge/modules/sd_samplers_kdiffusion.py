"""modules/sd_samplers_kdiffusion.py of Forge ``previous``: the k-diffusion wrapper is only used for sigmas (the UNet
call is forge_sample's); ``sample`` loads the sampling models first (``sampling_prepare``, inside the job's
inference mode) and calls ``sampling_cleanup`` after."""

import torch
from k_diffusion.external import CompVisDenoiser
from k_diffusion.sampling import sample_euler, sample_heun
from modules import shared
from modules.sd_samplers_cfg_denoiser import CFGDenoiser
from modules.sd_samplers_common import InterruptedException
from modules_forge.forge_sampler import sampling_cleanup, sampling_prepare


class CFGDenoiserKDiffusion(CFGDenoiser):
    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = CompVisDenoiser(shared.sd_model)
        return self.model_wrap


SAMPLERS = {"Euler": (sample_euler, False), "Heun": (sample_heun, True)}


def launch_sampling(sampler, func):
    """sd_samplers_common.Sampler.launch_sampling: Interrupt/Skip end sampling with the last latent."""
    try:
        return func()
    except InterruptedException:
        return sampler.last_latent


class KDiffusionSampler:
    def __init__(self, name, sd_model):
        self.funcname, self.second_order = SAMPLERS[name]
        self.model_wrap_cfg = CFGDenoiserKDiffusion(self)
        self.model_wrap = self.model_wrap_cfg.inner_model
        self.last_latent = None
        self.sampler_extra_args = {}

    def callback_state(self, d):
        shared.state.sampling_step = d["i"]

    def get_sigmas(self, steps):
        sigmas = self.model_wrap.sigmas
        idx = torch.linspace(len(sigmas) - 1, 0, steps)
        return torch.cat([sigmas[idx.round().long()], sigmas.new_zeros([1])])

    def initialize(self, p):
        self.model_wrap_cfg.p = p
        self.model_wrap_cfg.step = 0

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        unet_patcher = self.model_wrap.inner_model.forge_objects.unet
        sampling_prepare(unet_patcher, x=x)
        steps = steps or p.steps
        sigmas = self.get_sigmas(steps)
        x = x * sigmas[0]
        self.initialize(p)
        self.model_wrap_cfg.steps = steps
        self.model_wrap_cfg.total_steps = steps * 2 if self.second_order else steps
        shared.state.sampling_steps, shared.state.sampling_step = steps, 0
        self.last_latent = x
        self.sampler_extra_args = {"cond": conditioning, "image_cond": image_conditioning,
                                   "uncond": unconditional_conditioning, "cond_scale": p.cfg_scale, "s_min_uncond": 0.0}
        samples = launch_sampling(self, lambda: self.funcname(self.model_wrap_cfg, x, sigmas,
                                                              extra_args=self.sampler_extra_args,
                                                              callback=self.callback_state))
        sampling_cleanup(unet_patcher)
        return samples
