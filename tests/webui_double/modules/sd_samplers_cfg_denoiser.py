"""modules/sd_samplers_cfg_denoiser.py: CFGDenoiser.forward with upstream's row layout, callback
read-back, batch_cond_uncond single call, separate calls when token lengths differ."""

import torch
from modules import prompt_parser, sd_samplers_common, shared
from modules.script_callbacks import (
    AfterCFGCallbackParams,
    CFGDenoisedParams,
    CFGDenoiserParams,
    cfg_after_cfg_callback,
    cfg_denoised_callback,
    cfg_denoiser_callback,
)
from modules.shared import state


class CFGDenoiser(torch.nn.Module):
    def __init__(self, sampler):
        super().__init__()
        self.model_wrap = None
        self.steps = None
        self.total_steps = None
        self.step = 0
        self.sampler = sampler
        self.p = None

    @property
    def inner_model(self):
        raise NotImplementedError

    def get_pred_x0(self, x_in, x_out, sigma):
        return x_out

    def combine_denoised(self, x_out, conds_list, uncond, cond_scale):
        denoised_uncond = x_out[-uncond.shape[0]:]
        denoised = torch.clone(denoised_uncond)
        for i, conds in enumerate(conds_list):
            for cond_index, weight in conds:
                denoised[i] += (x_out[cond_index] - denoised_uncond[i]) * (weight * cond_scale)
        return denoised

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        if state.interrupted or state.skipped:
            raise sd_samplers_common.InterruptedException
        conds_list, tensor = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        uncond = prompt_parser.reconstruct_cond_batch(uncond, self.step)
        batch_size = len(conds_list)
        repeats = [len(conds_list[i]) for i in range(batch_size)]

        def make_condition_dict(c_crossattn, c_concat):
            return {"c_crossattn": [c_crossattn], "c_concat": [c_concat]}

        index = torch.repeat_interleave(torch.arange(batch_size), torch.as_tensor(repeats))
        x_in = torch.cat([x.index_select(0, index), x])
        sigma_in = torch.cat([sigma.index_select(0, index), sigma])
        image_cond_in = torch.cat([image_cond.index_select(0, index), image_cond])

        denoiser_params = CFGDenoiserParams(x_in, image_cond_in, sigma_in, state.sampling_step, state.sampling_steps,
                                            tensor, uncond, self)
        cfg_denoiser_callback(denoiser_params)
        x_in = denoiser_params.x
        image_cond_in = denoiser_params.image_cond
        sigma_in = denoiser_params.sigma
        tensor = denoiser_params.text_cond
        uncond = denoiser_params.text_uncond

        if tensor.shape[1] == uncond.shape[1]:
            cond_in = torch.cat([tensor, uncond])
            if shared.opts.batch_cond_uncond:
                x_out = self.inner_model(x_in, sigma_in, cond=make_condition_dict(cond_in, image_cond_in))
            else:
                x_out = torch.zeros_like(x_in)
                for a in range(0, x_out.shape[0], batch_size):
                    b = a + batch_size
                    x_out[a:b] = self.inner_model(x_in[a:b], sigma_in[a:b],
                                                  cond=make_condition_dict(cond_in[a:b], image_cond_in[a:b]))
        else:
            x_out = torch.zeros_like(x_in)
            bs = batch_size * 2 if shared.opts.batch_cond_uncond else batch_size
            for a in range(0, tensor.shape[0], bs):
                b = min(a + bs, tensor.shape[0])
                x_out[a:b] = self.inner_model(x_in[a:b], sigma_in[a:b],
                                              cond=make_condition_dict(tensor[a:b], image_cond_in[a:b]))
            n = uncond.shape[0]
            x_out[-n:] = self.inner_model(x_in[-n:], sigma_in[-n:], cond=make_condition_dict(uncond, image_cond_in[-n:]))

        cfg_denoised_callback(CFGDenoisedParams(x_out, state.sampling_step, state.sampling_steps, self.inner_model))
        denoised = self.combine_denoised(x_out, conds_list, uncond, cond_scale)
        idx = torch.as_tensor([c[0][0] for c in conds_list], dtype=torch.long)
        self.sampler.last_latent = self.get_pred_x0(x_in.index_select(0, idx), x_out.index_select(0, idx), sigma)
        after = AfterCFGCallbackParams(denoised, state.sampling_step, state.sampling_steps)
        cfg_after_cfg_callback(after)
        self.step += 1
        return after.x
