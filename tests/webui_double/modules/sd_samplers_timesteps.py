"""Timestep samplers (DDIM): the inner model returns eps; get_pred_x0 converts with alphas_cumprod."""

import torch
from modules import shared
from modules.sd_samplers_cfg_denoiser import CFGDenoiser
from modules.sd_samplers_kdiffusion import launch_sampling


class CompVisTimestepsDenoiser(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.inner_model = model

    def forward(self, input, timesteps, **kwargs):
        return self.inner_model.apply_model(input, timesteps, **kwargs)


class CFGDenoiserTimesteps(CFGDenoiser):
    def __init__(self, sampler):
        super().__init__(sampler)
        self.alphas = shared.sd_model.alphas_cumprod

    def get_pred_x0(self, x_in, x_out, sigma):
        ts = sigma.to(dtype=int)
        a_t = self.alphas[ts][:, None, None, None]
        return (x_in - (1 - a_t).sqrt() * x_out) / a_t.sqrt()

    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = CompVisTimestepsDenoiser(shared.sd_model)
        return self.model_wrap


@torch.no_grad()
def ddim(model, x, timesteps, extra_args=None, callback=None):
    alphas_cumprod = model.inner_model.inner_model.alphas_cumprod
    s_in = x.new_ones(x.shape[0])
    for i in range(len(timesteps) - 1, -1, -1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[i].item() * s_in, **extra_args)
        a_t = alphas_cumprod[timesteps[i]]
        a_prev = alphas_cumprod[timesteps[i - 1]] if i > 0 else alphas_cumprod.new_tensor(1.0)
        pred_x0 = (x - (1 - a_t).sqrt() * e_t) / a_t.sqrt()
        x = a_prev.sqrt() * pred_x0 + (1 - a_prev).sqrt() * e_t
        if callback is not None:
            callback({"x": x, "i": index, "sigma": 0, "denoised": pred_x0})
    return x


class CompVisSampler:
    def __init__(self, name, sd_model):
        self.model_wrap_cfg = CFGDenoiserTimesteps(self)
        self.last_latent = None
        self.sampler_extra_args = {}

    def callback_state(self, d):
        shared.state.sampling_step = d["i"]

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        self.model_wrap_cfg.p = p
        self.model_wrap_cfg.step = 0
        self.model_wrap_cfg.model_wrap = None
        self.model_wrap_cfg.steps = self.model_wrap_cfg.total_steps = steps
        shared.state.sampling_steps, shared.state.sampling_step = steps, 0
        timesteps = torch.linspace(1, len(self.model_wrap_cfg.alphas) - 1, steps).round().long()
        self.sampler_extra_args = {"cond": conditioning, "image_cond": image_conditioning,
                                   "uncond": unconditional_conditioning, "cond_scale": p.cfg_scale, "s_min_uncond": 0.0}
        self.model_wrap_cfg.inner_model  # noqa: B018  builds model_wrap like upstream's lazy property
        return launch_sampling(self, lambda: ddim(self.model_wrap_cfg, x, timesteps, extra_args=self.sampler_extra_args,
                                                  callback=self.callback_state))
