"""modules/sd_samplers_timesteps.py (+ sd_samplers_timesteps_impl.ddim) of Forge ``previous``: DDIM's denoiser
has ``classic_ddim_eps_estimation`` (the CFG denoiser converts to sigma space, forge_sample returns x0, the sampler
gets eps back); ``sample`` loads the sampling models first, like the k-diffusion sampler."""

import torch
from modules import shared
from modules.sd_samplers_cfg_denoiser import CFGDenoiser
from modules.sd_samplers_kdiffusion import launch_sampling
from modules_forge.forge_sampler import sampling_cleanup, sampling_prepare


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
        self.classic_ddim_eps_estimation = True

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
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    s_in = x.new_ones(x.shape[0])
    s_x = x.new_ones((x.shape[0], 1, 1, 1))
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in, **extra_args)
        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        x = a_prev.sqrt() * pred_x0 + (1.0 - a_prev).sqrt() * e_t
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": pred_x0})
    return x


class CompVisSampler:
    def __init__(self, funcname, sd_model):
        self.model_wrap_cfg = CFGDenoiserTimesteps(self)
        self.model_wrap = self.model_wrap_cfg.inner_model
        self.last_latent = None
        self.sampler_extra_args = {}

    def callback_state(self, d):
        shared.state.sampling_step = d["i"]

    def get_timesteps(self, p, steps):
        return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        unet_patcher = self.model_wrap.inner_model.forge_objects.unet
        sampling_prepare(unet_patcher, x=x)
        steps = steps or p.steps
        timesteps = self.get_timesteps(p, steps)
        self.model_wrap_cfg.p, self.model_wrap_cfg.step = p, 0
        self.model_wrap_cfg.steps = self.model_wrap_cfg.total_steps = steps
        shared.state.sampling_steps, shared.state.sampling_step = steps, 0
        self.last_latent = x
        self.sampler_extra_args = {"cond": conditioning, "image_cond": image_conditioning,
                                   "uncond": unconditional_conditioning, "cond_scale": p.cfg_scale, "s_min_uncond": 0.0}
        samples = launch_sampling(self, lambda: ddim(self.model_wrap_cfg, x, timesteps,
                                                     extra_args=self.sampler_extra_args, callback=self.callback_state))
        sampling_cleanup(unet_patcher)
        return samples
