"""Token training through the WebUI's own model path (``amortized.backend.TokenBackend``).

The amortized trainer needs the UNet *with AnimateDiff's motion module*, which exists only while AnimateDiff
samples a video: it injects the module (A1111) or wraps a clone of the UNet (Forge) for that generation and
takes it out afterwards. So the tab's training runs inside one short "carrier" generation (``token_job``), in
the first CFG callback where AnimateDiff is hooked, and everything here goes through the objects of that
callback exactly as the per-sample mode does: the same encoders (``tokens.build_encoder``: the prompt's one row
per frame, the token at CLIP's input), the same host (decode, checkpoint blocks) and the same x0 predictor
(``path.predictor``: cond rows only where AnimateDiff allows it, its context windows, both WebUIs).

Sampling is ours, as in the reference trainer: DDIM over A1111's DDIM timesteps (``make_ddim_timesteps``
"uniform": every ``1000 // steps``-th, +1 — diffusers' "leading" spacing with ``steps_offset`` 1, SD1.5's
scheduler config), with CFG, from each seed's start noise (``hosts.diffusers.sampler.initial_noise``). The
callback's denoiser is a k-diffusion one (the carrier samples with Euler): its latents are ``z / sqrt(ab)``
and it returns x0, so DDIM is the Euler step ``x0 + sigma' * (x - x0) / sigma``; the cache holds ``z`` (DDPM
scaling), as the reference trainer's does. ``ab`` is ``sd_model.alphas_cumprod`` at the callback: AnimateDiff's
schedule while it samples (it swaps the model's), which is also what the k-diffusion wrapper was built from.
"""

from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace

import torch

from ...hosts.diffusers.sampler import initial_noise
from .tokens import build_encoder


class WebUITokenBackend:
    def __init__(self, params, p, path, ad, n_tokens: int, steps: int, cfg_scale: float, level: str = "auto",
                 state=None, info: dict | None = None):
        self.params, self.p, self.path, self.ad = params, p, path, ad
        self.sd_model = p.sd_model
        self.n_tokens, self.steps, self.cfg_scale, self.level, self.state = n_tokens, steps, cfg_scale, level, state
        rows = params.text_uncond.shape[0]
        # A1111's callback holds [cond rows; uncond rows], Forge's the video's rows once (it batches cond and uncond
        # itself, in calc_cond_uncond_batch); the predictor gets them the way its path gets them
        self.doubled = params.x.shape[0] == 2 * rows
        if not self.doubled and params.x.shape[0] != rows:
            raise RuntimeError(f"unsupported batch layout: {params.x.shape[0]} latent rows for {rows} uncond rows")
        self.frames = int(ad.video_length) if ad is not None else rows
        if self.frames != rows:
            raise RuntimeError(f"the carrier samples {rows} rows for a {self.frames}-frame video; it must sample "
                               "exactly the video (AnimateDiff's context batch size = video length)")
        self.latent = tuple(params.x.shape[1:])  # C, h, w
        self.size = int(getattr(p, "width", 0) or self.latent[-1] * 8)
        self.info = info or {"kind": "webui"}
        ab = self.sd_model.alphas_cumprod.detach().double().cpu()
        stride = ab.shape[0] // steps
        self.timesteps = [(steps - 1 - i) * stride + 1 for i in range(steps)]
        self._sqrt_ab = [math.sqrt(float(ab[t])) for t in self.timesteps]
        self._sigmas = [math.sqrt((1 - float(ab[t])) / float(ab[t])) for t in self.timesteps]
        self._hosts: dict = {}
        self.on_clip = None  # (done, total) after each clip of a trajectories call: the tab's progress

    def notes(self) -> list[str]:
        """Why a prompt's tokens fell back to the output level, once each."""
        return sorted({h.note for h in self._hosts.values() if getattr(h, "note", None)})

    # ------------------------------------------------------------------ TokenBackend
    def host(self, prompt: str):
        if prompt not in self._hosts:
            with torch.no_grad():
                rows = self.sd_model.get_learned_conditioning([prompt])
                rows = (rows[0] if isinstance(rows, (list, tuple)) else rows)[:1].expand(self.frames, -1, -1)
                rows = rows.to(self.params.text_uncond.dtype).contiguous()
            encoder, note = build_encoder(self.sd_model.cond_stage_model, [prompt] * self.frames, self.n_tokens, rows,
                                          self.level)
            host = self.path.host(self.sd_model, encoder, self.state)
            host.cond_plain = rows
            host.uncond = self.params.text_uncond
            host.note = note
            self._hosts[prompt] = host
        return self._hosts[prompt]

    def step(self):
        """Each update, trajectory and validation call, forward and backward: the path's step context (A1111's
        sdp attention for the recompute; Forge: the sampling models loaded again after text encoding)."""
        return self.path.step(self.params)

    def predictor(self, prompt: str, latents: torch.Tensor, step: int, x0_mode: str):
        """x0 of every frame [F, C, h, w] for cache latents ``latents`` [1, C, F, h, w] (DDPM scaling) at step ``step``."""
        z = latents[0].permute(1, 0, 2, 3)
        return self._predictor(z / self._sqrt_ab[step], step, x0_mode)

    @torch.no_grad()
    def trajectories(self, conds: list[torch.Tensor], seeds: list[int], keep: list[int]) -> torch.Tensor:
        """[len(seeds), len(keep), C, F, h, w]: DDIM + CFG one clip at a time (one clip is the WebUI's batch)."""
        c, h, w = self.latent
        last = max(keep)
        out = []
        for n, (cond, seed) in enumerate(zip(conds, seeds, strict=True)):
            z = initial_noise((1, c, self.frames, h, w), seed)[0].permute(1, 0, 2, 3)  # DDIM: init_noise_sigma 1
            x = z.to(self.params.x.device, self.params.x.dtype) / self._sqrt_ab[0]
            kept = []
            for i in range(last + 1):
                if i in keep:
                    kept.append((x * self._sqrt_ab[i]).float().cpu().permute(1, 0, 2, 3))
                if i >= last:
                    break
                with self.step():
                    x0 = self._predictor(x, i, "cfg")(cond).to(x.dtype)
                sigma, nxt = self._sigmas[i], self._sigmas[i + 1]
                x = x0 + nxt * (x - x0) / sigma
                if self.state is not None and (self.state.interrupted or self.state.skipped):
                    raise InterruptedError("interrupted while sampling the training latents")
            out.append(torch.stack(kept))
            if self.on_clip is not None:
                self.on_clip(n + 1, len(seeds))
        return torch.stack(out)

    # ------------------------------------------------------------------ the callback's objects, at another step
    def _predictor(self, x: torch.Tensor, step: int, x0_mode: str):
        """``path.predictor`` for latents ``x`` [F, C, h, w] (k-diffusion scaling) at sampling step ``step``: the
        callback's params with these latents and this step's sigma (AnimateDiff's windows follow ``step``)."""
        b = self.frames
        x = x.to(self.params.x.device, self.params.x.dtype)
        n = 2 * b if self.doubled else b
        sigma = torch.full((n,), self._sigmas[step], device=self.params.sigma.device, dtype=self.params.sigma.dtype)
        params = SimpleNamespace(x=torch.cat([x, x]) if self.doubled else x, sigma=sigma, image_cond=self.params.image_cond,
                                 text_cond=self.params.text_cond, text_uncond=self.params.text_uncond,
                                 denoiser=self.params.denoiser, sampling_step=step, total_sampling_steps=self.steps)
        if self.ad is not None:
            self.ad.params.step = step
        predict, _rows = self.path.predictor(params, self.p, self.cfg_scale, x0_mode, self.ad)
        return predict


@contextlib.contextmanager
def kept_step(ad):
    """AnimateDiff's own step counter back after the job (its windows follow it)."""
    before = getattr(getattr(ad, "params", None), "step", None)
    try:
        yield
    finally:
        if ad is not None and before is not None:
            ad.params.step = before
