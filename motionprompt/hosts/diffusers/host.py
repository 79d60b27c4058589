"""``GuidanceHost`` over a diffusers AnimateDiff model, plus the per-step x0 predictor."""

from __future__ import annotations

import torch

from ...engine.checkpointing import DECODER_BLOCKS, UNET_BLOCKS, find_blocks
from ...engine.diffusion import predicted_x0
from ...engine.host import PredictX0
from .models import VideoModel
from .tokenizer import layout


def vae_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents [n, C, h, w] -> frames [n, 3, H, W] in about [-1, 1]: undo ``scaling_factor`` and,
    where the VAE has one, ``shift_factor`` (diffusers' convention: SD3/Flux VAEs, the toy model)."""
    z = latents.to(vae.dtype) / vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None)
    return vae.decode(z + shift if shift else z).sample


class DiffusersVideoHost:
    """Learnable tokens enter at the input-embedding level (as WebUI textual inversion does):
    a forward hook on the token embedding splices them in, so gradients run through the whole CLIP."""

    def __init__(
        self,
        model: VideoModel,
        prompt: str,
        negative_prompt: str = "",
        n_tokens: int = 1,
        device: str | torch.device = "cpu",
        freeze_weights: bool = True,
    ):
        self.model = model
        self.device = torch.device(device)
        self.n_tokens = n_tokens
        for m in (model.unet, model.vae, model.text_encoder):
            m.to(self.device)
            if freeze_weights:
                m.requires_grad_(False)
        tok = model.tokenizer
        ids, self._start = layout(tok, tok.ids(prompt), n_tokens)
        self._ids = torch.tensor([ids], device=self.device)
        with torch.no_grad():
            self.cond_plain = self._encode_ids(torch.tensor([layout(tok, tok.ids(prompt), 0)[0]], device=self.device))
            self.uncond = self._encode_ids(torch.tensor([layout(tok, tok.ids(negative_prompt), 0)[0]], device=self.device))
        self.interrupt_flag = False

    # ------------------------------------------------------------- GuidanceHost
    def embed_init(self, word: str, n_tokens: int) -> torch.Tensor:
        ids = self.model.tokenizer.ids(word) or [self.model.tokenizer.eos]
        table = self.model.text_encoder.get_input_embeddings().weight
        return torch.stack([table[ids[i % len(ids)]] for i in range(n_tokens)]).detach().float()

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[0] != self.n_tokens:
            raise ValueError(f"host was built for {self.n_tokens} tokens, got {tokens.shape[0]}")
        return self._encode_ids(self._ids, tokens)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return vae_decode(self.model.vae, latents)

    def interrupted(self) -> bool:
        return self.interrupt_flag

    def checkpoint_blocks(self, decoder: bool) -> list:
        """Every resnet, attention and motion module of the UNet (and of the VAE decoder): the memory paths."""
        blocks = find_blocks([self.model.unet], UNET_BLOCKS)
        if decoder:
            blocks += find_blocks([getattr(self.model.vae, "decoder", None)], DECODER_BLOCKS)
        return blocks

    # ------------------------------------------------------------- sampling helpers
    def _encode_ids(self, ids: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        enc = self.model.text_encoder
        handle = None
        if tokens is not None:
            start, n = self._start, tokens.shape[0]

            def splice(_module, _inputs, out):
                t = tokens.to(out.dtype).unsqueeze(0).expand(out.shape[0], -1, -1)
                return torch.cat([out[:, :start], t, out[:, start + n :]], dim=1)

            handle = enc.get_input_embeddings().register_forward_hook(splice)
        try:
            return enc(ids)[0]
        finally:
            if handle is not None:
                handle.remove()

    def eps(self, latents: torch.Tensor, t, cond: torch.Tensor) -> torch.Tensor:
        """UNet on a [B, C, F, h, w] video batch; UNetMotionModel wants one cond row per frame."""
        unet = self.model.unet
        frames = latents.shape[2]
        if cond.shape[0] == latents.shape[0]:
            cond = cond.repeat_interleave(frames, dim=0)
        return unet(latents.to(unet.dtype), t, encoder_hidden_states=cond.to(unet.dtype)).sample

    def predictor(self, latents: torch.Tensor, t, cfg_scale: float, x0_mode: str) -> PredictX0:
        """Per-step closure: cond -> x0 of every frame as [F, C, h, w] (the engine's layout)."""
        sched = self.model.scheduler
        alpha_bar = sched.alphas_cumprod[int(t)]
        ptype = sched.config.prediction_type
        eps_u_cache: list[torch.Tensor] = []

        def predict(cond: torch.Tensor) -> torch.Tensor:
            out = self.eps(latents, t, cond)
            if x0_mode == "cfg":
                if not eps_u_cache:
                    with torch.no_grad():
                        eps_u_cache.append(self.eps(latents, t, self.uncond))
                out = eps_u_cache[0] + cfg_scale * (out - eps_u_cache[0])
            dt = torch.promote_types(out.dtype, torch.float32)  # fp16 UNet -> fp32; float64 stays (tests)
            x0 = predicted_x0(latents.to(dt), out.to(dt), alpha_bar, ptype)
            return x0[0].permute(1, 0, 2, 3)  # [1, C, F, h, w] -> [F, C, h, w]

        _b, _c, frames, h, w = latents.shape
        predict.shape_hint = lambda _pairs: (frames, h * w, torch.empty((), dtype=self.model.unet.dtype).element_size())
        return predict

    def cfg_eps(self, latents: torch.Tensor, t, cond: torch.Tensor, cfg_scale: float) -> torch.Tensor:
        both = self.eps(torch.cat([latents, latents]), t, torch.cat([cond, self.uncond]))
        c, u = both.chunk(2)
        return u + cfg_scale * (c - u)

    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """[1, C, F, h, w] -> uint8 [F, H, W, 3]."""
        frames = []
        with torch.no_grad():
            for f in range(latents.shape[2]):
                frames.append(self.decode(latents[:, :, f]).float())
        video = torch.cat(frames).clamp(-1, 1)
        return ((video + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
