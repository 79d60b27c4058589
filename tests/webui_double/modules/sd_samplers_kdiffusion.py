"""k-diffusion path: CompVisDenoiser (returns x0), CFGDenoiserKDiffusion, Euler and Heun samplers
(decorated no_grad like k_diffusion.sampling), callback_state updating state.sampling_step."""

import torch
from modules import shared
from modules.sd_samplers_cfg_denoiser import CFGDenoiser
from modules.sd_samplers_common import InterruptedException


class CompVisDenoiser(torch.nn.Module):
    """k_diffusion.external.CompVisDenoiser: x0 = x - sigma * eps(x * c_in, t(sigma))."""

    def __init__(self, model):
        super().__init__()
        self.inner_model = model
        ac = model.alphas_cumprod
        self.register_buffer("sigmas", ((1 - ac) / ac) ** 0.5)
        self.register_buffer("log_sigmas", self.sigmas.log())

    def sigma_to_t(self, sigma):
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        t = (1 - w) * low_idx + w * high_idx
        return t.view(sigma.shape)

    def get_scalings(self, sigma):
        return -sigma, 1 / (sigma**2 + 1) ** 0.5

    def forward(self, input, sigma, **kwargs):
        c_out, c_in = [s[:, None, None, None] for s in self.get_scalings(sigma)]
        eps = self.inner_model.apply_model(input * c_in, self.sigma_to_t(sigma), **kwargs)
        return input + eps * c_out


class CFGDenoiserKDiffusion(CFGDenoiser):
    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = CompVisDenoiser(shared.sd_model)
        return self.model_wrap


def to_d(x, sigma, denoised):
    return (x - denoised) / sigma


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "denoised": denoised})
        x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "denoised": denoised})
        d = to_d(x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1] * s_in, **extra_args))
            x = x + (d + d_2) / 2 * dt
    return x


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
