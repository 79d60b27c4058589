"""sd-webui-animatediff branch ``forge/master`` (b20f7519, v2.0.2-f, 2024-03-21) as Forge ``previous`` runs it.

Differences from master (the A1111 double) that matter, each from the named upstream file:
* ``scripts/animatediff.py``: ``before_process`` converts the API dict (``get_animatediff_arg``) only when
  ``p.is_api``; loads the motion module and calls ``set_p`` (``p.batch_size = max(video_length, context)``);
  ``process_batch`` adds AnimateDiff's beta schedule as an ``alphas_cumprod`` modifier; ``process_before_every_sampling``
  injects into a CLONE of ``sd_model.forge_objects.unet``. No FreeInit, no ``mm_injected`` flag.
* ``scripts/animatediff_mm.py`` ``inject``: ``set_groupnorm_wrapper`` (V1 modules) inside a bare try/except (absent
  at Forge ``previous``), a ``block_inner_modifier`` that runs the motion modules after the last layer of input
  block 1 and of output block 0 here (upstream: input 1,2,4,5,7,8,10,11, middle, outputs), the motion module as an
  extra torch module during sampling (a ModelPatcher Forge loads/moves), ``model_function_wrapper`` =
  ``AnimateDiffInfV2V.mm_sd_forward``, its own memory estimator, a ControlNet wrapper.
* ``scripts/animatediff_infv2v.py``: ``animatediff_on_cfg_denoiser`` sets ``ad_params.step`` FIRST, builds
  ``text_cond`` at step 0 and writes it (padded to the uncond length) every step; ``mm_sd_forward(apply_model,
  info)`` windows ``info["input"]`` and uses ``context + [c + video_length]`` only when the batch has exactly
  2·video_length rows — with a video shorter than the context batch (p.batch_size = context) a [uncond; cond]
  batch of 2·context rows is windowed as ``range(context)``: only the uncond half is computed, the cond half stays
  zero (measured in a real Forge: cond prediction exactly 0).
* ``motion_module.py``: ``VanillaTemporalModule``'s temporal attention reshapes ``(b f)`` with
  ``f = ad_params.batch_size`` (the context size); they run from the block modifier and are never put into the
  UNet's ``TimestepEmbedSequential`` blocks (master appends them there).
The window scheduler, prompt travel and output are the same code as master (imported from the A1111 double).
"""

import logging
import sys
import types

import torch
from ldm_patched.modules import model_management
from ldm_patched.modules.model_management import get_torch_device, soft_empty_cache
from modules import scripts, shared
from modules.sd_samplers_cfg_denoiser import pad_cond
from torch import nn

from ..webui_double import animatediff as master

log = logging.getLogger("animatediff")


class AnimateDiffProcess:
    def __init__(self, model="mm_sd15_v3.safetensors", enable=False, video_length=0, fps=8, loop_number=0,
                 closed_loop="R-P", batch_size=16, stride=1, overlap=-1, format=("GIF", "PNG"), **_ignored):
        self.model, self.enable, self.video_length, self.fps = model, enable, video_length, fps
        self.loop_number, self.closed_loop, self.batch_size = loop_number, closed_loop, batch_size
        self.stride, self.overlap, self.format = stride, overlap, list(format)
        self.video_default = False
        self.is_i2i_batch = False
        self.prompt_scheduler = None

    def get_dict(self, is_img2img=False):
        return (f"model: {self.model}, video_length: {self.video_length}, fps: {self.fps}, closed_loop: "
                f"{self.closed_loop}, batch_size: {self.batch_size}, stride: {self.stride}, overlap: {self.overlap}")

    def apply_xyz(self):
        pass  # xyz_attrs: none in the double

    def _check(self):
        assert self.video_length >= 0 and self.fps > 0, "Video length and FPS should be positive."
        assert set(master.SAVE_FORMATS[:-1]) & set(self.format), "At least one saving format should be selected."

    def set_p(self, p):
        self._check()
        p.batch_size = self.batch_size if self.video_length < self.batch_size else self.video_length
        if self.video_length == 0:
            self.video_length = p.batch_size
            self.video_default = True
        if self.overlap == -1:
            self.overlap = self.batch_size // 4
        p.do_not_save_samples = True  # "PNG" saving goes to AnimateDiff's own folder


class VanillaTemporalModule(nn.Module):
    """motion_module.py ``VanillaTemporalModule`` (forge/master), reduced as in the A1111 double: '(b f) c h w' with
    f = ad_params.batch_size (``VersatileAttention``'s reshape), a mix along f, + the input. ``forward(x)``."""

    def __init__(self, in_channels):
        super().__init__()
        self.mix = nn.Conv1d(in_channels, in_channels, 3, padding=1)

    def forward(self, x):
        f = mm_animatediff.ad_params.batch_size
        bf, c, hh, ww = x.shape
        if bf % f:
            raise RuntimeError(f"temporal layer got {bf} rows, not a multiple of the context size {f}")
        t = x.view(bf // f, f, c, hh, ww).permute(0, 3, 4, 2, 1).reshape(-1, c, f)
        t = self.mix(t).reshape(bf // f, hh, ww, c, f).permute(0, 4, 3, 1, 2).reshape(bf, c, hh, ww)
        return x + 0.5 * t


class MotionWrapper(nn.Module):
    """motion_module.py ``MotionWrapper``: holds the motion modules (upstream in ``down_blocks[i].motion_modules``,
    ``mid_block``, ``up_blocks[i].motion_modules``; the double's two as ``down`` and ``up``)."""

    def __init__(self, mm_name, channels, gn_hack=False):
        super().__init__()
        self.mm_name, self.mm_hash, self.is_xl, self.is_adxl = mm_name, "0" * 64, False, False
        self.down = VanillaTemporalModule(channels)
        self.up = VanillaTemporalModule(channels)
        self._gn_hack = gn_hack

    def enable_gn_hack(self):
        return self._gn_hack


class AnimateDiffMM:
    def __init__(self):
        import os

        self.mm = None
        self.ad_params = None
        self.gn_hacked = None
        self.script_dir = os.path.dirname(os.path.abspath(__file__))  # upstream: the extension's folder

    def set_ad_params(self, ad_params):
        self.ad_params = ad_params

    get_model_dir = master.AnimateDiffMM.get_model_dir  # the same code on both branches

    def load(self, model_name):
        if self.mm is None or self.mm.mm_name != model_name:
            with torch.no_grad():
                torch.manual_seed(123)
                self.mm = MotionWrapper(model_name, shared.sd_model.forge_objects.unet.model.diffusion_model.model_channels)
            for part in (self.mm.down, self.mm.up):  # the double's stand-in for a motion module left off the device
                part.register_forward_pre_hook(lambda m, a, mm=self.mm: model_management.check_loaded(mm))

    def inject(self, sd_model, model_name="mm_sd15_v3.safetensors"):
        unet = sd_model.forge_objects.unet.clone()
        self.gn_hacked = False
        if self.mm.enable_gn_hack():
            try:
                unet.set_groupnorm_wrapper(lambda f, x, transformer_options={}: f(x))
                self.gn_hacked = True
            except Exception:  # upstream: bare except -> warning
                log.warning("SD1.5 GroupNorm32 forward function is NOT hacked. Performance will be degraded.")

        def mm_block_modifier(x, identifier, layer, layer_index, ts, transformer_options):
            block_type, block_idx = transformer_options["block"]
            if layer_index == len(ts) - 1 and identifier == "after":
                if block_type == "input" and block_idx == 1:
                    return self.mm.down(x)
                if block_type == "output" and block_idx == 0:
                    return self.mm.up(x)
            return x

        def mm_memory_estimator(input_shape):
            input_shape[0] = 2 * self.ad_params.batch_size
            return unet.memory_required(input_shape)

        mm_patcher = unet.add_extra_torch_module_during_sampling(self.mm)
        unet.add_extra_preserved_memory_during_sampling(mm_patcher.model_size())
        unet.set_model_unet_function_wrapper(AnimateDiffInfV2V.mm_sd_forward)
        unet.add_block_inner_modifier(mm_block_modifier)
        unet.set_memory_peak_estimation_modifier(mm_memory_estimator)
        unet.set_controlnet_model_function_wrapper(lambda model, inner_model, hint, **kwargs: inner_model(hint=hint, **kwargs))
        sd_model.forge_objects.unet = unet

    def set_ddim_alpha(self, sd_model):
        unet = sd_model.forge_objects.unet.clone()
        betas = torch.linspace(0.00085, 0.012, sd_model.num_timesteps, dtype=torch.float32, device=get_torch_device())
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        unet.add_alphas_cumprod_modifier(lambda _: alphas_cumprod)
        sd_model.forge_objects.unet = unet


mm_animatediff = AnimateDiffMM()


class AnimateDiffInfV2V(master.AnimateDiffInfV2V):
    """``ordered_halving`` and ``uniform`` are master's code verbatim; the callback and the wrapper are forge/master's."""

    @staticmethod
    def animatediff_on_cfg_denoiser(cfg_params):
        ad_params = mm_animatediff.ad_params
        if ad_params is None or not ad_params.enable:
            return
        ad_params.step = cfg_params.denoiser.step
        if cfg_params.denoiser.step == 0:
            prompt_closed_loop = ad_params.video_length > ad_params.batch_size and ad_params.closed_loop in ("R+P", "A")
            ad_params.text_cond = ad_params.prompt_scheduler.multi_cond(cfg_params.text_cond, prompt_closed_loop)

        def pad_cond_uncond(cond, uncond):
            empty = shared.sd_model.cond_stage_model_empty_prompt
            num_repeats = (cond.shape[1] - uncond.shape[1]) // empty.shape[1]
            if num_repeats < 0:
                cond = pad_cond(cond, -num_repeats, empty)
            elif num_repeats > 0:
                uncond = pad_cond(uncond, num_repeats, empty)
            return cond, uncond

        cfg_params.text_cond, cfg_params.text_uncond = pad_cond_uncond(ad_params.text_cond, cfg_params.text_uncond)

    @staticmethod
    def mm_sd_forward(apply_model, info):
        x_out = torch.zeros_like(info["input"])
        ad_params = mm_animatediff.ad_params
        for context in AnimateDiffInfV2V.uniform(ad_params.step, ad_params.video_length, ad_params.batch_size,
                                                 ad_params.stride, ad_params.overlap, ad_params.closed_loop):
            if x_out.shape[0] == 2 * ad_params.video_length:
                _context = context + [c + ad_params.video_length for c in context]
            else:
                _context = context
            info_c = {}
            for k, v in info["c"].items():
                if isinstance(v, torch.Tensor):
                    if v.shape[0] == 2 * ad_params.video_length:
                        info_c[k] = v[_context]
                    elif v.shape[0] == ad_params.video_length:
                        info_c[k] = v[context]
                    else:
                        info_c[k] = v
                elif isinstance(v, list):
                    if len(v) == 2 * ad_params.video_length:
                        info_c[k] = [v[i] for i in _context]
                    elif len(v) == ad_params.video_length:
                        info_c[k] = [v[i] for i in context]
                    else:
                        info_c[k] = v
                else:
                    info_c[k] = v  # transformer_options (and ControlNet's dict, not in the double)
            out = apply_model(info["input"][_context], info["timestep"][_context], **info_c)
            x_out = x_out.to(dtype=out.dtype)
            x_out[_context] = out
            del info_c
            soft_empty_cache(True)  # upstream also gc.collect()s per window: no effect on results
        return x_out


def get_animatediff_arg(p):
    """animatediff_utils.py: the API dict becomes an AnimateDiffProcess stored back into p.script_args."""
    for script in p.scripts.alwayson_scripts:
        if script.title().lower() == "animatediff":
            arg = p.script_args[script.args_from]
            if isinstance(arg, dict):
                arg = AnimateDiffProcess(**arg)
                p.script_args = list(p.script_args)
                p.script_args[script.args_from] = arg
            return arg
    return None


class AnimateDiffScript(scripts.Script):
    def title(self):
        return "AnimateDiff"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        import gradio as gr

        return (gr.State(value=AnimateDiffProcess()),)

    def before_process(self, p, params):
        if p.is_api:
            params = get_animatediff_arg(p)
        mm_animatediff.set_ad_params(params)
        params.apply_xyz()
        if params.enable:
            mm_animatediff.load(params.model)
            params.set_p(p)
            params.prompt_scheduler = master.AnimateDiffPromptSchedule(p, params)
            p.extra_generation_params["AnimateDiff"] = params.get_dict()

    def process_batch(self, p, params, **kwargs):
        if params.enable:
            mm_animatediff.set_ddim_alpha(p.sd_model)

    def process_before_every_sampling(self, p, params, **kwargs):
        if params.enable:
            mm_animatediff.inject(p.sd_model, params.model)

    def postprocess(self, p, res, params):
        if params.enable:
            master.output(p, res, params)


def install_module():
    mm_mod = types.ModuleType("scripts.animatediff_mm")
    mm_mod.mm_animatediff, mm_mod.AnimateDiffMM = mm_animatediff, AnimateDiffMM
    infv2v = types.ModuleType("scripts.animatediff_infv2v")
    infv2v.AnimateDiffInfV2V = AnimateDiffInfV2V
    sys.modules["scripts.animatediff_mm"] = mm_mod
    sys.modules["scripts.animatediff_infv2v"] = infv2v
