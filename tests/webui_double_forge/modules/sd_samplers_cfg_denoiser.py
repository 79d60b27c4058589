"""modules/sd_samplers_cfg_denoiser.py of Forge ``previous``: the cfg_denoiser callback gets x, sigma and
image_cond of B rows (A1111: 2·B), then ``forge_sampler.forge_sample`` reads ``denoiser_params`` back (so a new
``text_cond`` is what the UNet sees); there is no cfg_denoised callback; DDIM-like samplers
(``classic_ddim_eps_estimation``) have x and t moved into sigma space before the callback and get eps back."""

import torch
from modules import prompt_parser, sd_samplers_common
from modules.script_callbacks import (
    AfterCFGCallbackParams,
    CFGDenoiserParams,
    cfg_after_cfg_callback,
    cfg_denoiser_callback,
)
from modules.shared import state
from modules_forge import forge_sampler


def pad_cond(tensor, repeats, empty):
    return torch.cat([tensor, empty.repeat((tensor.shape[0], repeats, 1))], axis=1)


class CFGDenoiser(torch.nn.Module):
    def __init__(self, sampler):
        super().__init__()
        self.model_wrap = None
        self.mask = None
        self.steps = None
        self.total_steps = None
        self.step = 0
        self.sampler = sampler
        self.p = None
        self.classic_ddim_eps_estimation = False

    @property
    def inner_model(self):
        raise NotImplementedError

    def get_pred_x0(self, x_in, x_out, sigma):
        return x_out

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        if state.interrupted or state.skipped:
            raise sd_samplers_common.InterruptedException
        original_x_device, original_x_dtype = x.device, x.dtype
        if self.classic_ddim_eps_estimation:
            acd = self.inner_model.inner_model.alphas_cumprod
            fake_sigmas = ((1 - acd) / acd) ** 0.5
            real_sigma = fake_sigmas[sigma.round().long().clip(0, int(fake_sigmas.shape[0]))]
            x = x * ((real_sigma**2.0 + 1.0) ** 0.5)[:, None, None, None]
            sigma = real_sigma
        cond_composition, cond = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        uncond = prompt_parser.reconstruct_cond_batch(uncond, self.step)
        denoiser_params = CFGDenoiserParams(x, image_cond, sigma, state.sampling_step, state.sampling_steps, cond, uncond,
                                            self)
        cfg_denoiser_callback(denoiser_params)
        denoised = forge_sampler.forge_sample(self, denoiser_params=denoiser_params, cond_scale=cond_scale,
                                              cond_composition=cond_composition)
        self.sampler.last_latent = denoised
        after = AfterCFGCallbackParams(denoised, state.sampling_step, state.sampling_steps)
        cfg_after_cfg_callback(after)
        denoised = after.x
        self.step += 1
        if self.classic_ddim_eps_estimation:
            return (x - denoised) / sigma[:, None, None, None]
        return denoised.to(device=original_x_device, dtype=original_x_dtype)
