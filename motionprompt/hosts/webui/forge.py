"""Guidance on Forge's ldm_patched path: early-2024 Forge (tag ``previous``) and reForge, with AnimateDiff forge/master.

What differs from A1111 (host_api.md §6.1; measured in a real early-2024 Forge + AnimateDiff forge/master, 8 frames
64²; upstream files named are Forge ``previous`` unless said otherwise):

* The job runs under ``torch.inference_mode()`` (``modules/processing.py`` ``process_images_inner``). The CFG
  callback gets inference tensors and B rows (x [B,4,h,w], sigma [B], text_cond/text_uncond [B,77,768],
  image_cond [B,5,1,1]); ``torch.enable_grad()`` alone records nothing there. ``run.py`` leaves inference mode for
  the whole callback, and every host tensor fed to autograd is cloned first (``_own``).
* x0 comes from Forge's own call, ``ldm_patched.modules.samplers.calc_cond_uncond_batch(model, cond, uncond, x,
  sigma, model_options)`` with the UnetPatcher's ``model_options``: AnimateDiff's ``model_function_wrapper``
  (context windows) and ``block_inner_modifiers`` (the motion module) come with them. ``BaseModel.apply_model``
  returns the denoised latent for every sampler (``sd_samplers_cfg_denoiser.py`` turns DDIM's x/t into sigma space
  before the callback). The cond rows run alone (``uncond=None``, as ``sampling_function`` does at CFG 1 and as
  AnimateDiff's wrapper handles: its windows index B or 2·B rows); with a Forge ControlNet attached, the host's
  full ``[cond, uncond]`` call.
* ldm_patched's ``BasicTransformerBlock._forward`` adds residuals in place (``x += n`` after ``norm1(x)`` saved x):
  backward fails with "modified by an inplace operation". ``inplace_safe`` copies what autograd saves, weights
  excepted.
* On GPU, Forge moves models inside the job's inference mode (``model_management.load_models_gpu`` ->
  ``ModelPatcher.patch_model`` -> ``Module.to``): the weights become inference tensors, which autograd will not save
  ("Inference tensors cannot be saved for backward"). ``rematerialise`` replaces them with ordinary tensors holding
  the same values, one at a time and outside inference mode; nothing keeps the old ones, so memory stays as it was
  and later plain generations are bit-identical. On CPU the move is a no-op and the weights stay ordinary.
* Text encoding and VAE decode load their models through Forge's memory manager as Forge's own code does
  (``forge_clip.move_clip_to_gpu``, ``VAE.decode``); after a guided step the sampling models are loaded again
  (``forge_sampler.sampling_prepare``'s call), so the host's next UNet call finds them on its device.
* AnimateDiff forge/master with a video shorter than its context batch (default 16) never computes the cond half:
  ``mm_sd_forward`` takes the 2·video_length layout only, and calc_cond_uncond_batch batches ``[uncond; cond]``, so
  its window covers the uncond rows and the cond prediction stays exactly 0. ``problem`` refuses that before
  sampling; a zero cond prediction is refused in any case (never "guide" zeros).
* Not reproduced in the x0 the loss sees: other extensions' ``sampler_pre_cfg_function`` / ``sampler_cfg_function``
  / ``sampler_post_cfg_function`` (ldm_patched ``sampling_function``); ``conditioning_modifiers`` are applied
  (``forge_sampler.forge_sample``).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable

import torch
from torch import nn

from ...engine import saved_bytes
from ...engine.checkpointing import DECODER_BLOCKS, UNET_BLOCKS, find_blocks
from ...engine.host import PredictX0
from . import animatediff, flavour
from .host import WebUIHost, grad_frames

SHORT_CONTEXT = ("AnimateDiff forge/master never computes the cond half of a video shorter than its context batch size "
                 "({frames} < {context} frames; its output is then not guided by the prompt either): set AnimateDiff's "
                 "Context batch size to {frames}")
ZERO_COND = ("the UNet's cond prediction is exactly zero (AnimateDiff forge/master skips the cond half when the video is "
             "shorter than its Context batch size: set it to the video length)")


class ForgeLayoutError(RuntimeError):
    """The host computed something guidance must not optimise (an all-zero cond prediction, unexpected rows)."""


def problem(ad: animatediff.AnimateDiffState) -> str | None:
    """What makes a Forge + AnimateDiff job unguidable, known before sampling."""
    if animatediff.forge_wrapper() is None:
        return ("this AnimateDiff is not the Forge branch (sd-webui-animatediff forge/master or sd-forge-animatediff); "
                "guidance on Forge follows its model_function_wrapper")
    if ad.video_length < ad.context:
        return SHORT_CONTEXT.format(frames=ad.video_length, context=ad.context)
    return None


def unet_of(params):
    """The UnetPatcher ``forge_sampler.forge_sample`` samples with: ``denoiser.inner_model.inner_model.forge_objects``."""
    return params.denoiser.inner_model.inner_model.forge_objects.unet


def sampling_models(unet) -> list:
    """What ``forge_sampler.sampling_prepare`` loads: the UnetPatcher and its extra patchers (the motion module)."""
    return [unet, *unet.extra_model_patchers_during_sampling]


def sampling_memory(unet, shape) -> int:
    """``sampling_prepare``'s estimate for a batch of ``shape`` (AnimateDiff installs its own estimator)."""
    b, c, h, w = (int(v) for v in shape)
    estimate = unet.model_options.get("memory_peak_estimation_modifier", unet.memory_required)
    return int(estimate([b * 2, c, h, w]) + unet.extra_preserved_memory_during_sampling)


def load(models: list, memory_required: int = 0) -> None:
    """Forge's ``model_management.load_models_gpu``: a no-op for models already loaded (it only reorders its list)."""
    from ldm_patched.modules import model_management

    model_management.load_models_gpu(models, memory_required=memory_required)


def rematerialise(modules: Iterable[nn.Module]) -> int:
    """Inference-tensor weights and buffers -> ordinary tensors with the same values; returns how many were replaced.

    A weight moved inside inference mode (``Module.to``: ``param.data = moved``) gets new data in place. A Parameter
    *created* inside inference mode (a LoRA-patched weight: ``utils.set_attr`` in ``ModelPatcher.patch_model``, even
    on CPU) has no version counter, which no new data restores: it is replaced by a new Parameter with the same
    values and ``requires_grad`` (``unpatch_model`` swaps the module attribute back as it always does)."""
    count, seen, renewed = 0, set(), {}  # id(old Parameter) -> (weak ref, replacement): tied weights stay tied
    with torch.inference_mode(False), torch.no_grad():
        for module in modules:
            for sub in module.modules():
                if id(sub) in seen:
                    continue
                seen.add(id(sub))
                for name, param in list(sub._parameters.items()):
                    if param is None:
                        continue
                    old, new = renewed.get(id(param), (None, None))
                    if old is not None and old() is param:  # a tied weight already replaced elsewhere
                        sub._parameters[name] = new
                        continue
                    if not _has_version_counter(param):
                        new = nn.Parameter(param.detach().clone(), requires_grad=param.requires_grad)
                        renewed[id(param)] = (weakref.ref(param), new)  # weak: the old weight is freed at once
                        sub._parameters[name] = new
                    elif param.is_inference():
                        param.data = param.data.clone()
                    else:
                        continue
                    count += 1
                for name, buf in list(sub._buffers.items()):
                    if buf is not None and buf.is_inference():
                        sub._buffers[name] = buf.clone()
                        count += 1
    return count


def _has_version_counter(t: torch.Tensor) -> bool:
    try:
        t._version  # noqa: B018
    except RuntimeError:  # "Inference tensors do not track version counter"
        return False
    return True


@contextlib.contextmanager
def inplace_safe(modules: Iterable[nn.Module]):
    """Autograd keeps its own copy of every tensor it saves, so host code that later adds into it in place
    (``x += n``) cannot invalidate the backward pass. Weights (and views of them) are saved as they are: nothing
    modifies them, and copying them would duplicate the model."""
    weights = {t.untyped_storage().data_ptr() for m in modules for t in (*m.parameters(), *m.buffers())}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if isinstance(t, nn.Parameter) or t.untyped_storage().data_ptr() in weights:
            return t
        copy = t.clone()
        saved_bytes.observe(copy, copy=True)  # this hook replaces the accountant's in the UNet call: count what it keeps
        return copy

    with torch.autograd.graph.saved_tensors_hooks(pack, _unpack):
        yield


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


def forge_element_size(unet, fallback: torch.Tensor) -> int:
    """Bytes per element of ldm_patched's activations: its manual-cast dtype where it computes in another dtype
    than it stores (``--unet-in-fp32`` and friends), else its weights' dtype (A1111's ``dtype_unet`` is not
    Forge's knob)."""
    model = unet.model
    dtype = getattr(model, "manual_cast_dtype", None)
    if dtype is None:
        weight = next(model.diffusion_model.parameters(), None)
        dtype = weight.dtype if weight is not None else fallback.dtype
    return torch.empty((), dtype=dtype).element_size()


def _own(t):
    """A host tensor made by the job (an inference tensor), as an ordinary tensor autograd may save."""
    if not isinstance(t, torch.Tensor):
        return t
    with torch.inference_mode(False):
        return t.detach().clone()


#: ldm_patched's ``BasicTransformerBlock`` adds into x in place after ``norm1`` saved it (``inplace_safe``); checkpointing
#: recomputes saved tensors without autograd's version check, so a wrapped spatial transformer would silently get
#: wrong gradients. Its attention and feed-forward parts are wrapped instead, the in-place adds stay outside.
FORGE_UNET_BLOCKS = (UNET_BLOCKS - {"SpatialTransformer"}) | {"CrossAttention", "FeedForward"}


class ForgeHost(WebUIHost):
    """Text encoder and VAE as Forge loads them, with weights autograd can use."""

    def _forge(self):
        return self.sd_model.forge_objects

    def checkpoint_blocks(self, decoder: bool) -> list:
        """ldm_patched's resnets, attention and feed-forward parts, AnimateDiff's motion modules (Forge runs them
        from a block modifier, outside the UNet's tree: they come with the UnetPatcher's extra patchers) and,
        with ``decoder``, the VAE decoder's resnets and attention."""
        unet = self._forge().unet
        roots = [unet.model.diffusion_model, *(patcher.model for patcher in unet.extra_model_patchers_during_sampling)]
        blocks = find_blocks(roots, FORGE_UNET_BLOCKS)
        if decoder:
            blocks += find_blocks([getattr(self._forge().vae.first_stage_model, "decoder", None)], DECODER_BLOCKS)
        return blocks

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        clip = self._forge().clip
        load([clip.patcher])  # forge_clip.CLIP_SD_15_L.encode_with_transformers loads it the same way
        rematerialise([clip.cond_stage_model, self.sd_model.cond_stage_model])
        return self.encoder.encode(tokens)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """What ``sd.VAE.decode`` runs, without its ``inference_mode`` wrapper: ``first_stage_model.decode`` of the
        latent format's ``process_out`` (SD1.5: / scale_factor), in the VAE's dtype and device; RGB in [-1, 1]."""
        forge = self._forge()
        vae = forge.vae
        load([vae.patcher])
        rematerialise([vae.first_stage_model])
        z = forge.unet.model.model_config.latent_format.process_out(latents)
        return vae.first_stage_model.decode(z.to(vae.vae_dtype).to(vae.device))


class ForgePath:
    """``host.A1111Path``'s counterpart for Forge's ldm_patched sampling (see the module doc)."""

    name = "forge"

    def __init__(self):
        self.label = flavour.label()

    def injected(self, params, ad) -> bool:
        """AnimateDiff forge/master injects per sampling, into a clone of the UnetPatcher (``animatediff_mm.py``
        ``inject``); its wrapper on the UNet this denoiser samples with says it is active."""
        wrapper = unet_of(params).model_options.get("model_function_wrapper")
        return wrapper is not None and wrapper is animatediff.forge_wrapper()

    def host(self, sd_model, encoder, state) -> ForgeHost:
        return ForgeHost(sd_model, encoder, state)

    @contextlib.contextmanager
    def step(self, params):
        """A guided step; afterwards the sampling models are loaded again (a no-op when nothing moved them)."""
        unet = unet_of(params)
        try:
            yield
        finally:
            load(sampling_models(unet), sampling_memory(unet, params.x.shape))

    def predictor(self, params, p, cfg_scale: float, x0_mode: str, ad) -> tuple[PredictX0, str]:
        return forge_predictor(params, p, cfg_scale, x0_mode, ad)


def forge_predictor(params, p, cfg_scale: float, x0_mode: str, ad) -> tuple[PredictX0, str]:
    """cond rows [B, T, D] -> x0 of the video's frames, through calc_cond_uncond_batch; and which rows it runs."""
    from ldm_patched.modules import samplers
    from ldm_patched.modules.conds import CONDRegular
    from modules_forge import forge_sampler

    unet = unet_of(params)
    x, sigma, uncond = _own(params.x), _own(params.sigma), _own(params.text_uncond)
    b = x.shape[0]
    if sigma.shape[0] != b or uncond.shape[0] != b:
        raise ForgeLayoutError(f"unsupported batch layout: {b} latent rows, {sigma.shape[0]} sigmas, "
                               f"{uncond.shape[0]} uncond rows")
    if ad is not None and 0 < ad.video_length < b:  # p.batch_size = context > video_length (``problem``)
        raise ForgeLayoutError(SHORT_CONTEXT.format(frames=ad.video_length, context=b))
    control = unet.controlnet_linked_list
    concat = unet.extra_concat_condition if unet.extra_concat_condition is not None else _own(params.image_cond)
    seed = int(p.seeds[0]) if getattr(p, "seeds", None) else 0  # forge_sample: self.p.seeds[0]
    modules = [unet.model, *(patcher.model for patcher in unet.extra_model_patchers_during_sampling)]
    memory = sampling_memory(unet, x.shape)
    x0_uncond: list[torch.Tensor] = []

    def conds(text: torch.Tensor) -> list:
        """``forge_sample``'s conversion: c_crossattn, c_concat only when it matches x's batch and size, the ControlNet."""
        out = forge_sampler.cond_from_a1111_to_patched_ldm(text)
        if isinstance(concat, torch.Tensor) and concat.shape[0] == b and concat.shape[2:] == x.shape[2:]:
            out[0]["model_conds"]["c_concat"] = CONDRegular(concat)
        if control is not None:
            out[0]["control"] = control
        return out

    def run(cond: torch.Tensor, rows: str, frames=None, ran: list | None = None):
        model, xs, ts, opts, u, c = unet.model, x, sigma, unet.model_options, conds(uncond), conds(cond)
        for modifier in opts.get("conditioning_modifiers", []):
            model, xs, ts, u, c, _scale, opts, _seed = modifier(model, xs, ts, u, c, cfg_scale, opts, seed)
        c, u = {"cond": (c, None), "uncond": ([], u), "both": (c, u)}[rows]
        load(sampling_models(unet), memory)  # the text encoder may have pushed them out
        rematerialise(modules)
        with inplace_safe(modules), animatediff.only_windows(frames if ad is not None else None, ran):
            return samplers.calc_cond_uncond_batch(model, c, u, xs, ts, opts)

    def predict(cond: torch.Tensor, frames=None) -> torch.Tensor:
        cond = cond.to(uncond.dtype)
        if control is None:
            ran: list[int] = []
            out_c = run(cond, "cond", frames, ran)[0]
            predict.ran_frames = sum(ran) or b  # the windows that ran with gradients (all rows without windows)
            if x0_mode == "cfg" and not x0_uncond:
                with torch.no_grad():
                    x0_uncond.append(run(cond.detach(), "uncond")[1])
            out_u = x0_uncond[0] if x0_mode == "cfg" else None
        else:
            out_c, out_u = run(cond, "both")
            out_u = out_u.detach() if x0_mode == "cfg" else None
        if not bool((out_c.detach() != 0).any()):
            raise ForgeLayoutError(ZERO_COND)
        x0 = out_c if out_u is None else out_u + cfg_scale * (out_c - out_u)
        return x0

    predict.frame_count = b  # = the video's frames (``problem`` refuses a video shorter than the context)
    predict.ran_frames = 2 * b  # the full batch; the cond-only call sets what it ran
    predict.shape_hint = lambda pairs: (grad_frames(ad, b, pairs) if control is None else 2 * b,
                                        x.shape[-2] * x.shape[-1], forge_element_size(unet, x))
    rows = "cond-only UNet" if control is None else "full-batch UNet (Forge ControlNet attached)"
    return predict, f"{rows} via Forge calc_cond_uncond_batch"
