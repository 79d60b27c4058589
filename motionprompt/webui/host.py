"""``GuidanceHost`` over A1111's live objects, and the per-step x0 predictor from a CFG callback.

The UNet call goes through ``params.denoiser.inner_model`` with the full ``[cond rows; uncond rows]``
batch, exactly as the sampler calls it: that is the layout AnimateDiff's hooked forward (context
windows, ControlNet hint slicing, V1 GroupNorm halves) requires. ``get_pred_x0`` turns the output
into x0 for both sampler families (identity for k-diffusion, eps -> x0 for DDIM-like samplers).
"""

from __future__ import annotations

import torch

from ..host import PredictX0


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


def predictor(params, cfg_scale: float, x0_mode: str) -> PredictX0:
    """cond rows [B, T, D] -> x0 of every frame [B, C, h, w] for the latents of this callback."""
    den = params.denoiser
    x_in, sigma_in, image_cond = params.x, params.sigma, params.image_cond
    uncond = params.text_uncond
    b = uncond.shape[0]
    if x_in.shape[0] != 2 * b:
        raise RuntimeError(f"unsupported batch layout: {x_in.shape[0]} latent rows for {b} uncond rows (AND prompts?)")

    def predict(cond: torch.Tensor) -> torch.Tensor:
        cond_in = torch.cat([cond.to(uncond.dtype), uncond])
        out = den.inner_model(x_in, sigma_in, cond={"c_crossattn": [cond_in], "c_concat": [image_cond]})
        x0_c = den.get_pred_x0(x_in[:b], out[:b], sigma_in[:b])
        if x0_mode == "cfg":
            x0_u = den.get_pred_x0(x_in[b:], out[b:].detach(), sigma_in[b:])
            x0_c = x0_u + cfg_scale * (x0_c - x0_u)
        return x0_c

    return predict
