"""``GuidanceHost`` over A1111's live objects, and the per-step x0 predictor from a CFG callback.

The inner loop runs the UNet on the cond rows only where AnimateDiff's computation allows it
(``unet_path``), else on the full ``[cond rows; uncond rows]`` batch exactly as the sampler calls it.
``get_pred_x0`` turns the output into x0 for both sampler families (identity for k-diffusion,
eps -> x0 for DDIM-like samplers).
"""

from __future__ import annotations

import contextlib

import torch

from ...engine.checkpointing import DECODER_BLOCKS, UNET_BLOCKS, find_blocks
from ...engine.host import PredictX0
from . import animatediff
from .unet_path import UNetPath, choose, cond_rows_forward


class WebUIHost:
    def __init__(self, sd_model, encoder, state=None):
        self.sd_model = sd_model
        self.encoder = encoder
        self.state = state  # shared.state: interrupted / skipped

    def embed_init(self, word: str, n_tokens: int) -> torch.Tensor:
        return self.encoder.embed_init(word, n_tokens)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode(tokens)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Differentiable VAE decode (``decode_first_stage`` is decorated with ``no_grad`` in ldm)."""
        from modules import devices

        vae = self.sd_model.first_stage_model
        return vae.decode(latents.to(devices.dtype_vae) / self.sd_model.scale_factor)

    def interrupted(self) -> bool:
        return bool(self.state is not None and (self.state.interrupted or self.state.skipped))

    def checkpoint_blocks(self, decoder: bool) -> list:
        """A1111: ldm's resnets and spatial transformers with AnimateDiff's motion modules (injected into the
        UNet's blocks), and with ``decoder`` the VAE decoder's resnets and attention (``memory_plan``)."""
        blocks = find_blocks([self.sd_model.model.diffusion_model], UNET_BLOCKS)
        if decoder:
            blocks += find_blocks([getattr(self.sd_model.first_stage_model, "decoder", None)], DECODER_BLOCKS)
        return blocks


def predictor(params, cfg_scale: float, x0_mode: str, frames: int | None = None,
              batch_cond_uncond: bool = True, path: UNetPath | None = None) -> PredictX0:
    """cond rows [B, T, D] -> x0 of the first ``frames`` frames [F, C, h, w] for the latents of this callback.

    ``frames``: the video the user gets. AnimateDiff samples ``p.batch_size = max(video_length, context)``
    rows and keeps only the first ``video_length`` (animatediff_output.py ``output``); with a short video
    the rows behind the cut are not even computed as a video (its hooked forward indexes
    ``context + [c + video_length]``), so they must never be scored.

    ``path`` (``unet_path.choose``): cond rows only where the rows are independent, else the full
    ``[cond; uncond]`` batch. ``x0_mode=cfg`` on the cond-only path computes the uncond prediction once per
    predictor (one per sampling step), without gradients: nothing the tokens change reaches it.

    ``batch_cond_uncond`` off (Settings > Optimizations): the host calls the UNet once on the cond rows and
    once on the uncond rows (sd_samplers_cfg_denoiser.py ``forward``), and AnimateDiff's hooked forward then
    computes only the first half of any batch it gets — a full-batch call would leave the uncond rows zero.
    We call it the way the host does.
    """
    den = params.denoiser
    x_in, sigma_in, image_cond = params.x, params.sigma, params.image_cond
    uncond = params.text_uncond
    b = uncond.shape[0]
    if x_in.shape[0] != 2 * b:
        raise RuntimeError(f"unsupported batch layout: {x_in.shape[0]} latent rows for {b} uncond rows (AND prompts?)")
    keep = b if frames is None else min(int(frames), b)
    ad = animatediff.state()
    if path is None:
        path = choose(getattr(den, "p", None), batch_cond_uncond, ad)
    if not batch_cond_uncond and not path.cond_only:
        raise RuntimeError("a full-batch UNet call needs \"Batch cond/uncond\" on")
    x0_uncond: list[torch.Tensor] = []

    def rows(half: slice, text: torch.Tensor, frames=None, ran: list | None = None) -> torch.Tensor:
        return cond_rows_forward(den.inner_model, x_in[half], sigma_in[half], text, image_cond[half],
                                 batch_cond_uncond, ad, frames, ran)

    def uncond_x0() -> torch.Tensor:
        if not x0_uncond:
            with torch.no_grad():
                x0_uncond.append(den.get_pred_x0(x_in[b:], rows(slice(b, 2 * b), uncond), sigma_in[b:]))
        return x0_uncond[0]

    def predict(cond: torch.Tensor, frames=None) -> torch.Tensor:
        cond = cond.to(uncond.dtype)
        if path.cond_only:
            ran: list[int] = []
            out_c = rows(slice(0, b), cond, frames, ran)
            predict.ran_frames = sum(ran)  # what ran with gradients, for the memory plan's calibration
            x0_u = uncond_x0() if x0_mode == "cfg" else None
        else:
            out = den.inner_model(x_in, sigma_in,
                                  cond={"c_crossattn": [torch.cat([cond, uncond])], "c_concat": [image_cond]})
            out_c = out[:b]
            x0_u = den.get_pred_x0(x_in[b:], out[b:].detach(), sigma_in[b:]) if x0_mode == "cfg" else None
        x0_c = den.get_pred_x0(x_in[:b], out_c, sigma_in[:b])
        if x0_u is not None:
            x0_c = x0_u + cfg_scale * (x0_c - x0_u)
        return x0_c[:keep]

    predict.frame_count = keep
    predict.ran_frames = 2 * b  # the full batch; the cond-only path sets what it ran
    predict.shape_hint = lambda pairs: (grad_frames(ad, b, pairs) if path.cond_only else 2 * b,
                                        x_in.shape[-2] * x_in.shape[-1], unet_element_size(x_in))
    return predict


#: A1111 attention optimisations whose forward keeps no attention matrix for the backward (torch's
#: scaled_dot_product_attention, xformers), by ``sd_hijack.current_optimizer.name``
MATRIX_FREE = ("sdp", "sdp-no-mem", "xformers")


@contextlib.contextmanager
def sdp_attention():
    """A guided step on A1111 runs ldm's CrossAttention through A1111's own sdp forward (``sd_hijack_optimizations.
    scaled_dot_product_attention_forward``) when the active optimisation is another one. Doggettx — what
    "Automatic" picks without --xformers — and sub-quadratic, InvokeAI and V1 keep every attention matrix for the
    backward (+20 GiB at 16 frames 512²) and slice by the free memory at call time, so a checkpoint's recompute
    would not compute what the forward did. The host's own sampling calls keep its choice: only our step's UNet
    calls (the same attention, another kernel) are affected."""
    import torch.nn.functional as F

    try:
        import ldm.modules.attention as attention
        from modules import sd_hijack, sd_hijack_optimizations
    except ImportError:
        yield
        return
    sdp = getattr(sd_hijack_optimizations, "scaled_dot_product_attention_forward", None)
    current = getattr(getattr(sd_hijack, "current_optimizer", None), "name", None)
    cls = getattr(attention, "CrossAttention", None)
    if sdp is None or cls is None or current in MATRIX_FREE or not hasattr(F, "scaled_dot_product_attention"):
        yield
        return
    original = cls.__dict__.get("forward")
    cls.forward = sdp
    try:
        yield
    finally:
        if original is not None:
            cls.forward = original
        else:
            del cls.forward


def grad_frames(ad, rows: int, pairs: int) -> int:
    """Frames the UNet runs with gradients for ``pairs`` scored pairs, at most: the windows their frames come
    from (one per frame at most; overlapping windows can run more frames than the video has)."""
    if ad is None or ad.windows <= 1:
        return rows
    return min(2 * pairs, ad.windows + 1) * ad.context


def unet_element_size(fallback: torch.Tensor) -> int:
    """Bytes per element of the UNet's activations: the WebUI's UNet dtype (fp16 unless --no-half)."""
    from modules import devices

    dtype = getattr(devices, "dtype_unet", None) or fallback.dtype
    return torch.empty((), dtype=dtype).element_size()


class A1111Path:
    """How a guided step reaches A1111's UNet (``forge.ForgePath`` is Forge's): the callback's ``[cond; uncond]``
    rows through the k-diffusion/timestep wrapper (``predictor``), cond rows only where ``unet_path`` allows."""

    name = "a1111"
    label = "A1111"

    def injected(self, params, ad) -> bool:
        return ad.injected

    def host(self, sd_model, encoder, state) -> WebUIHost:
        return WebUIHost(sd_model, encoder, state)

    def step(self, params):
        return sdp_attention()

    def predictor(self, params, p, cfg_scale: float, x0_mode: str, ad) -> tuple[PredictX0, str]:
        from modules import shared

        batched = bool(shared.opts.batch_cond_uncond)
        path = choose(p, batched, ad)
        frames = ad.video_length if ad else None
        return predictor(params, cfg_scale, x0_mode, frames, batched, path), path.text()
