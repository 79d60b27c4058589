"""sd-webui-animatediff (master) as seen by other extensions: the ``mm_animatediff`` singleton, the
"AnimateDiff" AlwaysOn script, its cfg_denoiser callback (text_cond frozen at step 0, inner_model
forward hooked with context windows that REQUIRE the 2 x video_length row layout), prompt travel
and FreeInit's p.sample replacement, and its motion modules (motion_module.py ``VanillaTemporalModule``) injected
into ldm's UNet blocks. Behaviour follows scripts/animatediff_*.py and motion_module.py at a88e889."""

import re
import sys
import types
from types import MethodType

import numpy as np
import torch
from modules import scripts, shared
from torch import nn

#: animatediff_ui.py ``supported_save_formats`` (TXT last: not a video format)
SAVE_FORMATS = ["GIF", "MP4", "WEBP", "WEBM", "PNG", "TXT"]


class AnimateDiffProcess:
    def __init__(self, model="mm_sd15_v3.safetensors", enable=False, video_length=0, fps=8, closed_loop="R-P",
                 batch_size=16, stride=1, overlap=-1, format=("GIF", "PNG"), freeinit_enable=False, freeinit_iters=2,
                 **_ignored):
        self.model, self.enable, self.video_length, self.fps = model, enable, video_length, fps
        self.format = list(format)
        self.closed_loop, self.batch_size, self.stride, self.overlap = closed_loop, batch_size, stride, overlap
        self.freeinit_enable, self.freeinit_iters = freeinit_enable, freeinit_iters
        self.prompt_scheduler = None

    def _check(self):
        """animatediff_ui.py ``_check`` (called first in ``set_p``): a video needs one of the saving formats."""
        assert self.video_length >= 0 and self.fps > 0, "Video length and FPS should be positive."
        assert set(SAVE_FORMATS[:-1]) & set(self.format), "At least one saving format should be selected."

    def set_p(self, p):
        self._check()
        p.batch_size = self.batch_size if self.video_length < self.batch_size else self.video_length
        if self.video_length == 0:
            self.video_length = p.batch_size
        if self.overlap == -1:
            self.overlap = self.batch_size // 4


class VanillaTemporalModule(nn.Module):
    """motion_module.py ``VanillaTemporalModule``, reduced to what matters to other extensions: the temporal layer
    reshapes '(b f) c h w' with f = ``ad_params.batch_size`` (the context size, ``VersatileAttention``), mixes along
    f and adds the result to its input (upstream: temporal attention inside ``TemporalTransformer3DModel``, plus
    the residual). ``forward(x)`` as upstream: ldm's ``TimestepEmbedSequential`` calls it as a plain layer."""

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


class AnimateDiffMM:
    """animatediff_mm.py ``AnimateDiffMM`` (master). ``inject`` puts motion modules INTO the UNet's blocks, as
    upstream: ``unet.input_blocks[i].append(mm)``, ``unet.output_blocks[i].append(mm)`` (upstream also inserts one
    before the last layer of output blocks 2, 5, 8 and, for a V2 module, of the middle block); ``restore`` pops them
    again (``pop(-1)``). The toy UNet has two places: input block 1 and output block 0, upstream's first input and
    first output places; the toy module has no middle-block part. Motion-module weights keep requires_grad=True
    (upstream never changes it). An already injected UNet is left as it is (upstream restores and re-injects the
    same modules). Left out: loading the file (``load``: the double makes the modules with a fixed seed), the
    GroupNorm32 hack of V1 modules (``enable_gn_hack`` is False), the DDIM alpha schedule, the LoRA layer mapping."""

    mm_injected = False
    INPUT_BLOCKS = (1,)  # upstream (SD1.5): 1, 2, 4, 5, 7, 8, 10, 11
    OUTPUT_BLOCKS = (0,)  # upstream (SD1.5): 0 to 11

    def __init__(self):
        import os

        self.ad_params = None
        self.mm = types.SimpleNamespace(enable_gn_hack=lambda: False, is_v2=True)
        self.script_dir = os.path.dirname(os.path.abspath(__file__))  # upstream: the extension's folder

    def set_ad_params(self, ad_params):
        self.ad_params = ad_params

    def get_model_dir(self):
        """Upstream: ``opts.animatediff_model_path``, else ``<extension>/model`` (``script_dir``)."""
        import os

        model_dir = shared.opts.data.get("animatediff_model_path", os.path.join(self.script_dir, "model"))
        return model_dir or os.path.join(self.script_dir, "model")

    def inject(self, sd_model, model_name=""):
        if AnimateDiffMM.mm_injected:
            return
        unet = sd_model.model.diffusion_model
        torch.manual_seed(123)
        channels = unet.model_channels
        down = [VanillaTemporalModule(channels) for _ in self.INPUT_BLOCKS]
        up = [VanillaTemporalModule(channels) for _ in self.OUTPUT_BLOCKS]
        for mm_inject, unet_idx in zip(down, self.INPUT_BLOCKS, strict=True):
            unet.input_blocks[unet_idx].append(mm_inject)
        for mm_inject, unet_idx in zip(up, self.OUTPUT_BLOCKS, strict=True):
            unet.output_blocks[unet_idx].append(mm_inject)
        AnimateDiffMM.mm_injected = True

    def restore(self, sd_model):
        if not AnimateDiffMM.mm_injected:
            return
        unet = sd_model.model.diffusion_model
        for unet_idx in self.INPUT_BLOCKS:
            unet.input_blocks[unet_idx].pop(-1)
        for unet_idx in self.OUTPUT_BLOCKS:
            unet.output_blocks[unet_idx].pop(-1)
        AnimateDiffMM.mm_injected = False


mm_animatediff = AnimateDiffMM()


class AnimateDiffPromptSchedule:
    """Prompt travel: '<frame>: text' lines between head and tail lines; rows slerped between key frames."""

    def __init__(self, p, params):
        self.prompt_map = None
        lines = p.prompt.strip().split("\n") if isinstance(p.prompt, str) else []
        head, mapp, tail, mode = [], {}, [], "head"
        for line in lines:
            if mode == "head" and re.match(r"^\d+:", line):
                mode = "mapp"
            if mode == "head":
                head.append(line)
            elif mode == "mapp":
                m = re.match(r"^(\d+): (.+)$", line)
                if m:
                    mapp[int(m.group(1))] = m.group(2)
                else:
                    mode = "tail"
            if mode == "tail":
                tail.append(line)
        if not mapp:
            return
        self.prompt_map, prompt_list, last, current = {}, [], 0, ""
        for frame, prompt in mapp.items():
            prompt_list += [current] * (frame - last)
            last = frame
            current = f"{', '.join(head)}, {prompt}, {', '.join(tail)}"
            self.prompt_map[frame] = current
        prompt_list += [current] * (p.batch_size - last)
        p.prompt = prompt_list * p.n_iter

    def single_cond(self, center, video_length, cond, closed_loop=False):
        keys = list(self.prompt_map)
        key_prev, key_next = (keys[-1], keys[0]) if closed_loop else (keys[0], keys[-1])
        for k in keys:
            if k > center:
                key_next = k
                break
            key_prev = k
        dist_prev = center - key_prev + (video_length if center < key_prev else 0)
        dist_next = key_next - center + (video_length if key_next < center else 0)
        if key_prev == key_next or dist_prev + dist_next == 0:
            return cond[key_prev]
        return self.slerp(cond[key_prev], cond[key_next], dist_prev / (dist_prev + dist_next))

    def multi_cond(self, cond, closed_loop=False):
        if self.prompt_map is None:
            return cond
        rows = [self.single_cond(i, cond.shape[0], cond, closed_loop) for i in range(cond.shape[0])]
        return torch.stack(rows).to(cond.dtype).to(cond.device)

    @staticmethod
    def slerp(v0, v1, t, threshold=0.9995):
        u0, u1 = v0 / v0.norm(), v1 / v1.norm()
        dot = (u0 * u1).sum()
        if dot.abs() > threshold:
            return (1.0 - t) * v0 + t * v1
        omega = dot.acos()
        return (((1.0 - t) * omega).sin() * v0 + (t * omega).sin() * v1) / omega.sin()


class AnimateDiffInfV2V:
    """animatediff_infv2v.py: the context scheduler and the cfg_denoiser callback live on this class;
    upstream's animatediff.py imports it, so ``scripts.animatediff_infv2v`` is in sys.modules at runtime."""

    @staticmethod
    def ordered_halving(val):
        """animatediff_infv2v.py ``AnimateDiffInfV2V.ordered_halving``: the 64-bit bit-reversal of ``val`` as a
        fraction of 2**64 (0, 1/2, 1/4, 3/4, ... for steps 0, 1, 2, 3, ...)."""
        return int(f"{val:064b}"[::-1], 2) / (1 << 64)

    @staticmethod
    def uniform(step, video_length, batch_size, stride, overlap, closed_loop):
        """animatediff_infv2v.py ``AnimateDiffInfV2V.uniform``: context windows over the frames. The windows
        are shifted by a step-dependent pad (``ordered_halving(step)``), so the layout differs from step to step:
        a UNet call made with another step's ``ad_params.step`` uses other windows than the host's."""
        if video_length <= batch_size:
            yield list(range(batch_size))
            return
        wrap_all = closed_loop == "A"
        stride = min(stride, int(np.ceil(np.log2(video_length / batch_size))) + 1)
        shift = AnimateDiffInfV2V.ordered_halving(step)
        for context_step in 1 << np.arange(stride):
            pad = round(video_length * shift)
            span = batch_size * context_step
            starts = range(int(shift * context_step) + pad, video_length + pad + (0 if wrap_all else -overlap),
                           span - overlap)
            both_wrapped = False
            for j in starts:
                window = [e % video_length for e in range(j, j + span, context_step)]
                if closed_loop != "N" or context_step != 1:
                    yield window
                    continue
                # 'N' (no closed loop): a window that wraps round the end is replaced by the first/last windows
                first = [e % video_length for e in range(0, span, context_step)]
                last = [e % video_length for e in range(video_length - span, video_length, context_step)]
                wrap_at = next((i for i in range(1, len(window)) if window[i] < window[i - 1]), None)
                if wrap_at is None:
                    yield window
                elif both_wrapped:
                    both_wrapped = False
                    yield first
                elif wrap_at < batch_size - overlap:
                    yield last
                    yield first
                else:
                    both_wrapped = True
                    yield last


def animatediff_on_cfg_denoiser(cfg_params):
    ad_params = mm_animatediff.ad_params
    if ad_params is None or not ad_params.enable:
        return
    if not AnimateDiffMM.mm_injected:
        return
    if cfg_params.denoiser.step == 0 and getattr(cfg_params.denoiser.inner_model, "original_forward", None) is None:
        closed = ad_params.video_length > ad_params.batch_size and ad_params.closed_loop in ("R+P", "A")
        ad_params.text_cond = ad_params.prompt_scheduler.multi_cond(cfg_params.text_cond, closed)

        def mm_sd_forward(self, x_in, sigma_in, cond):
            x_out = torch.zeros_like(x_in)
            for context in AnimateDiffInfV2V.uniform(ad_params.step, ad_params.video_length, ad_params.batch_size,
                                                     ad_params.stride, ad_params.overlap, ad_params.closed_loop):
                if shared.opts.batch_cond_uncond:
                    _context = context + [c + ad_params.video_length for c in context]
                else:
                    _context = context
                out = self.original_forward(x_in[_context], sigma_in[_context],
                                            cond={k: ([v[0][_context]] if isinstance(v, list) else v[_context])
                                                  for k, v in cond.items()})
                x_out = x_out.to(dtype=out.dtype)
                x_out[_context] = out
            return x_out

        inner = cfg_params.denoiser.inner_model
        inner.original_forward = inner.forward
        inner.forward = MethodType(mm_sd_forward, inner)
    cfg_params.text_cond = ad_params.text_cond
    ad_params.step = cfg_params.denoiser.step


class AnimateDiffScript(scripts.Script):
    def title(self):
        return "AnimateDiff"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        import gradio as gr

        return (gr.State(value=AnimateDiffProcess()),)

    def before_process(self, p, params):
        if isinstance(params, dict):  # get_animatediff_arg: the API sends a dict
            params = AnimateDiffProcess(**params)
            p.script_args = list(p.script_args)
            p.script_args[self.args_from] = params
        mm_animatediff.set_ad_params(params)
        if params.enable:
            mm_animatediff.inject(p.sd_model, params.model)
            params.set_p(p)
            params.prompt_scheduler = AnimateDiffPromptSchedule(p, params)
            p.extra_generation_params["AnimateDiff"] = f"video_length: {params.video_length}"
            if params.freeinit_enable:
                hack_freeinit(p, params)

    def postprocess(self, p, res, params):
        if isinstance(params, dict):
            params = p.script_args[self.args_from]
        if params.enable:
            mm_animatediff.restore(p.sd_model)
            output(p, res, params)


def output(p, res, params):
    """animatediff_output.py ``AnimateDiffOutput.output``: of every ``max(video_length, context)`` sampled
    frames only the first ``video_length`` become the video, saved under ``<p.outpath_samples>/AnimateDiff/<date>/``
    as ``<seq>-<seed>.<format>`` (the double writes empty files of those names; upstream then swaps res.images for
    the saved files, the double keeps the kept frames so tests can look at exactly what the user gets)."""
    import datetime
    from pathlib import Path

    out = Path(f"{p.outpath_samples}/AnimateDiff/{datetime.datetime.now().strftime('%Y-%m-%d')}")
    out.mkdir(parents=True, exist_ok=True)
    step = params.video_length if params.video_length > params.batch_size else params.batch_size
    kept = []
    for n, i in enumerate(range(0, len(res.images), step)):
        kept += res.images[i:i + params.video_length]
        for fmt in params.format:
            if fmt in ("GIF", "MP4", "WEBP", "WEBM"):
                (out / f"{len(list(out.iterdir())):05}-{p.all_seeds[n]}.{fmt.lower()}").touch()
    res.images = kept


def hack_freeinit(p, params):
    """FreeInit: sampler.sample is called freeinit_iters times; process_before_every_sampling is NOT."""
    original_sample = p.sample

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        x = None
        for it in range(params.freeinit_iters):
            out = original_sample(conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts)
            x = out
            if it < params.freeinit_iters - 1:
                seeds = [s + 1000 for s in seeds]  # re-noised start (frequency mix omitted)
        return x

    p.sample = MethodType(sample, p)


def module():
    mod = types.ModuleType("scripts.animatediff_mm")
    mod.mm_animatediff = mm_animatediff
    mod.AnimateDiffMM = AnimateDiffMM
    return mod


def infv2v_module():
    mod = types.ModuleType("scripts.animatediff_infv2v")
    mod.AnimateDiffInfV2V = AnimateDiffInfV2V
    return mod


def install_module():
    sys.modules["scripts.animatediff_mm"] = module()
    sys.modules["scripts.animatediff_infv2v"] = infv2v_module()
