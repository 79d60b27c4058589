"""modules_forge/forge_sampler.py (Forge ``previous``): A1111 conditioning -> ldm_patched conds, ``forge_sample``
(reads ``denoiser_params`` AFTER the cfg_denoiser callback: x, sigma, text_cond, text_uncond, image_cond),
``sampling_prepare`` (loads the UnetPatcher and its extra patchers through model_management, inside the job's
inference mode) and ``sampling_cleanup``."""

import torch
from ldm_patched.modules import model_management
from ldm_patched.modules.conds import CONDCrossAttn, CONDRegular
from ldm_patched.modules.samplers import sampling_function


def cond_from_a1111_to_patched_ldm(cond):
    if isinstance(cond, torch.Tensor):
        return [{"cross_attn": cond, "model_conds": {"c_crossattn": CONDCrossAttn(cond)}}]
    raise NotImplementedError("SDXL dict conds are not in the double")


def cond_from_a1111_to_patched_ldm_weighted(cond, weights):
    transposed = list(map(list, zip(*weights, strict=False)))
    results = []
    for cond_pre in transposed:
        current_indices, current_weight = [], 0
        for i, w in cond_pre:
            current_indices.append(i)
            current_weight = w
        h = cond_from_a1111_to_patched_ldm(cond[current_indices])
        h[0]["strength"] = current_weight
        results += h
    return results


def forge_sample(self, denoiser_params, cond_scale, cond_composition):
    unet = self.inner_model.inner_model.forge_objects.unet
    model, control, extra_concat_condition = unet.model, unet.controlnet_linked_list, unet.extra_concat_condition
    x = denoiser_params.x
    timestep = denoiser_params.sigma
    uncond = cond_from_a1111_to_patched_ldm(denoiser_params.text_uncond)
    cond = cond_from_a1111_to_patched_ldm_weighted(denoiser_params.text_cond, cond_composition)
    model_options = unet.model_options
    seed = self.p.seeds[0]
    image_cond_in = extra_concat_condition if extra_concat_condition is not None else denoiser_params.image_cond
    if isinstance(image_cond_in, torch.Tensor) and image_cond_in.shape[0] == x.shape[0] \
            and image_cond_in.shape[2] == x.shape[2] and image_cond_in.shape[3] == x.shape[3]:
        for h in uncond + cond:
            h["model_conds"]["c_concat"] = CONDRegular(image_cond_in)
    if control is not None:
        for h in cond + uncond:
            h["control"] = control
    for modifier in model_options.get("conditioning_modifiers", []):
        model, x, timestep, uncond, cond, cond_scale, model_options, seed = modifier(
            model, x, timestep, uncond, cond, cond_scale, model_options, seed)
    return sampling_function(model, x, timestep, uncond, cond, cond_scale, model_options, seed)


def sampling_prepare(unet, x):
    b, c, h, w = x.shape
    memory_estimation_function = unet.model_options.get("memory_peak_estimation_modifier", unet.memory_required)
    unet_inference_memory = memory_estimation_function([b * 2, c, h, w])
    additional_inference_memory = unet.extra_preserved_memory_during_sampling
    additional_model_patchers = unet.extra_model_patchers_during_sampling
    model_management.load_models_gpu(models=[unet, *additional_model_patchers],
                                     memory_required=unet_inference_memory + additional_inference_memory)


def sampling_cleanup(unet):
    pass  # upstream: ControlNet cleanup and ops.cleanup_cache
