"""k-diffusion path: CompVisDenoiser (returns x0), CFGDenoiserKDiffusion, Euler and Heun samplers
(decorated no_grad like k_diffusion.sampling), callback_state updating state.sampling_step."""

import torch
from k_diffusion.external import CompVisDenoiser
from k_diffusion.sampling import sample_euler, sample_heun, to_d  # noqa: F401  (A1111 imports them the same way)
from modules import shared
from modules.sd_samplers_cfg_denoiser import CFGDenoiser
from modules.sd_samplers_common import InterruptedException


class CFGDenoiserKDiffusion(CFGDenoiser):
    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = CompVisDenoiser(shared.sd_model)
        return self.model_wrap


SAMPLERS = {"Euler": (sample_euler, False), "Heun": (sample_heun, True)}


class KDiffusionSampler:
    def __init__(self, name, sd_model):
        self.funcname, self.second_order = SAMPLERS[name]
        self.model_wrap_cfg = CFGDenoiserKDiffusion(self)
        self.last_latent = None
        self.sampler_extra_args = {}

    def callback_state(self, d):
        shared.state.sampling_step = d["i"]

    def get_sigmas(self, steps):
        sigmas = self.model_wrap_cfg.inner_model.sigmas
        idx = torch.linspace(len(sigmas) - 1, 0, steps)
        return torch.cat([sigmas[idx.round().long()], sigmas.new_zeros([1])])

    def initialize(self, p):
        self.model_wrap_cfg.p = p
        self.model_wrap_cfg.step = 0
        self.model_wrap_cfg.model_wrap = None

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        self.initialize(p)
        sigmas = self.get_sigmas(steps)
        x = x * sigmas[0]
        self.model_wrap_cfg.steps = steps
        # sd_samplers_common.py SamplerData.total_steps: steps * 2 for second-order samplers (the last
        # step of Heun makes one call only, so the count is never reached; A1111 uses steps * 2 all the same)
        self.model_wrap_cfg.total_steps = steps * 2 if self.second_order else steps
        shared.state.sampling_steps = steps
        shared.state.sampling_step = 0
        self.sampler_extra_args = {"cond": conditioning, "image_cond": image_conditioning,
                                   "uncond": unconditional_conditioning, "cond_scale": p.cfg_scale, "s_min_uncond": 0.0}
        return launch_sampling(self, lambda: self.funcname(self.model_wrap_cfg, x, sigmas,
                                                           extra_args=self.sampler_extra_args, callback=self.callback_state))


def launch_sampling(sampler, func):
    """sd_samplers_common.Sampler.launch_sampling: Interrupt/Skip end sampling with the last latent."""
    try:
        return func()
    except InterruptedException:
        return sampler.last_latent
