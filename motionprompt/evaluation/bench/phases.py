"""Where guidance time goes: forward phases from ``MotionGuide`` records, the backward split by
gradient-arrival hooks into discriminator, flow, VAE, UNet and text-encoder parts; ``untimed`` is the
remainder of the step time (pair sampling, bookkeeping).
"""

from __future__ import annotations

import time

import torch
from torch import nn

PHASES = [  # (key, label); forward phases come from MotionGuide records, backward parts from hooks
    ("text_encoder_forward", "text encoder forward"),
    ("unet_forward", "UNet forward (grad)"),
    ("vae_decode", "VAE decode forward"),
    ("flow", "flow forward"),
    ("discriminator", "discriminator + loss"),
    ("disc_backward", "discriminator backward"),
    ("flow_backward", "flow backward"),
    ("vae_backward", "VAE decode backward"),
    ("unet_backward", "UNet backward"),
    ("text_encoder_backward", "text encoder backward"),
    ("backward_unsplit", "backward (not split)"),
    ("optimizer", "optimizer"),
    ("untimed", "untimed remainder"),
]


class GradientSpy:
    """Times when gradients arrive at the disc logits, flow, decoded frames, x0 and the text cond.

    The autograd engine runs the backward in reverse order of the forward, so the gaps between these
    arrivals are the backward time of discriminator, flow, VAE decoder and UNet; the rest of the
    recorded backward phase is the text encoder (plus the loss and the engine's setup).
    """

    ORDER = ("logits", "flow", "frames", "x0", "cond")

    def __init__(self, sync: bool):
        self.sync = sync
        self.current: dict[str, float] = {}
        self.totals = {"disc_backward": 0.0, "flow_backward": 0.0, "vae_backward": 0.0, "unet_backward": 0.0}
        self.complete = 0  # backward passes with all five arrivals

    def watch(self, tensor: torch.Tensor, tag: str) -> None:
        if isinstance(tensor, torch.Tensor) and tensor.requires_grad and torch.is_grad_enabled():
            tensor.register_hook(lambda _grad: self._arrived(tag))

    def _arrived(self, tag: str) -> None:
        if self.sync:
            torch.cuda.synchronize()
        self.current[tag] = time.perf_counter()
        if tag == "cond":
            c = self.current
            if all(k in c for k in self.ORDER):
                self.totals["disc_backward"] += c["flow"] - c["logits"]
                self.totals["flow_backward"] += c["frames"] - c["flow"]
                self.totals["vae_backward"] += c["x0"] - c["frames"]
                self.totals["unet_backward"] += c["cond"] - c["x0"]
                self.complete += 1
            self.current = {}

    @property
    def split_seconds(self) -> float:
        return sum(self.totals.values())


class SpyHost:
    """Delegates to a ``DiffusersVideoHost``; marks cond, x0 and decoded frames for the backward split."""

    def __init__(self, host, spy: GradientSpy):
        self._host, self._spy = host, spy

    def __getattr__(self, name):
        return getattr(self._host, name)

    def encode(self, tokens):
        out = self._host.encode(tokens)
        self._spy.watch(out, "cond")
        return out

    def decode(self, latents):
        out = self._host.decode(latents)
        self._spy.watch(out, "frames")
        return out

    def predictor(self, latents, t, cfg_scale, x0_mode):
        predict = self._host.predictor(latents, t, cfg_scale, x0_mode)

        def wrapped(cond, *frames):
            x0 = predict(cond, *frames)
            self._spy.watch(x0, "x0")
            return x0

        for name in ("frame_count", "shape_hint"):  # what the engine reads off a predictor (engine/host.py)
            if hasattr(predict, name):
                setattr(wrapped, name, getattr(predict, name))
        return wrapped


class SpyModule(nn.Module):
    def __init__(self, inner: nn.Module, spy: GradientSpy, tag: str):
        super().__init__()
        self.inner, self._spy, self._tag = inner, spy, tag
        self.settings = getattr(inner, "settings", None)

    def forward(self, *args):
        out = self.inner(*args)
        self._spy.watch(out, self._tag)
        return out



def phase_times(guide, spy: GradientSpy) -> tuple[dict, float]:
    times: dict[str, float] = {}
    for r in guide.records:
        for k, v in r.times.items():
            times[k] = times.get(k, 0.0) + v
    guidance = sum(r.seconds for r in guide.records)
    backward = times.get("backward", 0.0)
    out = {
        "text_encoder_forward": times.get("encode", 0.0),
        "unet_forward": times.get("unet_forward", 0.0),
        "vae_decode": times.get("vae_decode", 0.0),
        "flow": times.get("flow", 0.0),
        "discriminator": times.get("discriminator", 0.0),
    }
    iterations = sum(len(r.iterations) for r in guide.records)
    if spy.complete and spy.complete == iterations:
        out.update(spy.totals)
        out["text_encoder_backward"] = backward - spy.split_seconds
    else:
        out["backward_unsplit"] = backward
    out["optimizer"] = times.get("optimizer", 0.0)
    out["untimed"] = guidance - sum(out.values())
    return out, guidance

