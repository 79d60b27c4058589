"""ldm_patched/modules/samplers.py (Forge ``previous``, ComfyUI lineage): ``calc_cond_uncond_batch`` and
``sampling_function``, as upstream minus areas, masks, timestep ranges and gligen.

What the extension depends on and the double keeps: the cond and uncond entries are batched in REVERSED order
(``to_batch_temp.reverse()``, so a full call's rows are ``[uncond; cond]``); ``uncond=None`` computes the cond rows
alone; the batch goes through ``model_options["model_function_wrapper"]`` (AnimateDiff's context windows) with
``c["transformer_options"]`` a copy of the UnetPatcher's; outputs accumulate in place into zero tensors divided by
a count; ``sampling_function`` drops the uncond at CFG 1 and runs the cfg / post-cfg function hooks."""

import collections
import math

import torch
from ldm_patched.modules import model_management


def get_area_and_mult(conds, x_in, timestep_in):
    area = (x_in.shape[2], x_in.shape[3], 0, 0)
    strength = conds.get("strength", 1.0)
    input_x = x_in[:, :, area[2]:area[0] + area[2], area[3]:area[1] + area[3]]
    mult = torch.ones_like(input_x) * strength
    conditioning = {}
    for c, value in conds["model_conds"].items():
        conditioning[c] = value.process_cond(batch_size=x_in.shape[0], device=x_in.device, area=area)
    cond_obj = collections.namedtuple("cond_obj", ["input_x", "mult", "conditioning", "area", "control", "patches"])
    return cond_obj(input_x, mult, conditioning, area, conds.get("control", None), None)


def cond_equal_size(c1, c2):
    if c1 is c2:
        return True
    if c1.keys() != c2.keys():
        return False
    return all(c1[k].can_concat(c2[k]) for k in c1)


def can_concat_cond(c1, c2):
    if c1.input_x.shape != c2.input_x.shape:
        return False
    if (c1.control is None) != (c2.control is None) or (c1.control is not None and c1.control is not c2.control):
        return False
    return cond_equal_size(c1.conditioning, c2.conditioning)


def cond_cat(c_list):
    temp = {}
    for x in c_list:
        for k in x:
            temp.setdefault(k, []).append(x[k])
    return {k: conds[0].concat(conds[1:]) for k, conds in temp.items()}


def compute_cond_mark(cond_or_uncond, sigmas):
    cond_mark = []
    for cx in cond_or_uncond:
        cond_mark += [cx] * int(sigmas.shape[0])
    return torch.Tensor(cond_mark).to(sigmas)


def calc_cond_uncond_batch(model, cond, uncond, x_in, timestep, model_options):
    out_cond = torch.zeros_like(x_in)
    out_count = torch.ones_like(x_in) * 1e-37
    out_uncond = torch.zeros_like(x_in)
    out_uncond_count = torch.ones_like(x_in) * 1e-37
    COND, UNCOND = 0, 1

    to_run = [(get_area_and_mult(x, x_in, timestep), COND) for x in cond]
    if uncond is not None:
        to_run += [(get_area_and_mult(x, x_in, timestep), UNCOND) for x in uncond]

    while len(to_run) > 0:
        first = to_run[0]
        first_shape = first[0][0].shape
        to_batch_temp = [x for x in range(len(to_run)) if can_concat_cond(to_run[x][0], first[0])]
        to_batch_temp.reverse()
        to_batch = to_batch_temp[:1]
        free_memory = model_management.get_free_memory(x_in.device)
        for i in range(1, len(to_batch_temp) + 1):
            batch_amount = to_batch_temp[:len(to_batch_temp) // i]
            input_shape = [len(batch_amount) * first_shape[0], *list(first_shape)[1:]]
            if model.memory_required(input_shape) < free_memory:
                to_batch = batch_amount
                break

        input_x, mult, c, cond_or_uncond, area = [], [], [], [], []
        control = None
        for x in to_batch:
            o = to_run.pop(x)
            p = o[0]
            input_x.append(p.input_x)
            mult.append(p.mult)
            c.append(p.conditioning)
            area.append(p.area)
            cond_or_uncond.append(o[1])
            control = p.control

        batch_chunks = len(cond_or_uncond)
        input_x = torch.cat(input_x)
        c = cond_cat(c)
        timestep_ = torch.cat([timestep] * batch_chunks)

        transformer_options = model_options["transformer_options"].copy() if "transformer_options" in model_options else {}
        transformer_options["cond_or_uncond"] = cond_or_uncond[:]
        transformer_options["sigmas"] = timestep
        transformer_options["cond_mark"] = compute_cond_mark(cond_or_uncond=cond_or_uncond, sigmas=timestep)
        c["transformer_options"] = transformer_options

        if control is not None:
            c["control"] = control.get_control(input_x, timestep_, c.copy(), len(cond_or_uncond))
            c["control_model"] = control

        if "model_function_wrapper" in model_options:
            output = model_options["model_function_wrapper"](model.apply_model, {
                "input": input_x, "timestep": timestep_, "c": c, "cond_or_uncond": cond_or_uncond}).chunk(batch_chunks)
        else:
            output = model.apply_model(input_x, timestep_, **c).chunk(batch_chunks)
        del input_x

        for o in range(batch_chunks):
            a = area[o]
            if cond_or_uncond[o] == COND:
                out_cond[:, :, a[2]:a[0] + a[2], a[3]:a[1] + a[3]] += output[o] * mult[o]
                out_count[:, :, a[2]:a[0] + a[2], a[3]:a[1] + a[3]] += mult[o]
            else:
                out_uncond[:, :, a[2]:a[0] + a[2], a[3]:a[1] + a[3]] += output[o] * mult[o]
                out_uncond_count[:, :, a[2]:a[0] + a[2], a[3]:a[1] + a[3]] += mult[o]
        del mult

    out_cond /= out_count
    out_uncond /= out_uncond_count
    return out_cond, out_uncond


def sampling_function(model, x, timestep, uncond, cond, cond_scale, model_options={}, seed=None):  # noqa: B006
    edit_strength = sum(item.get("strength", 1) for item in cond)
    if math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False):
        uncond_ = None
    else:
        uncond_ = uncond
    for fn in model_options.get("sampler_pre_cfg_function", []):
        model, cond, uncond_, x, timestep, model_options = fn(model, cond, uncond_, x, timestep, model_options)
    cond_pred, uncond_pred = calc_cond_uncond_batch(model, cond, uncond_, x, timestep, model_options)
    if "sampler_cfg_function" in model_options:
        args = {"cond": x - cond_pred, "uncond": x - uncond_pred, "cond_scale": cond_scale, "timestep": timestep,
                "input": x, "sigma": timestep, "cond_denoised": cond_pred, "uncond_denoised": uncond_pred, "model": model,
                "model_options": model_options}
        cfg_result = x - model_options["sampler_cfg_function"](args)
    elif not math.isclose(edit_strength, 1.0):
        cfg_result = uncond_pred + (cond_pred - uncond_pred) * cond_scale * edit_strength
    else:
        cfg_result = uncond_pred + (cond_pred - uncond_pred) * cond_scale
    for fn in model_options.get("sampler_post_cfg_function", []):
        args = {"denoised": cfg_result, "cond": cond, "uncond": uncond, "model": model, "uncond_denoised": uncond_pred,
                "cond_denoised": cond_pred, "sigma": timestep, "model_options": model_options, "input": x}
        cfg_result = fn(args)
    return cfg_result
