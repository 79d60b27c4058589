"""The MotionPrompt loss of a token at one sampling step, and one token update: what an inner iteration of the
per-sample mode (``guidance.MotionGuide``) and one (prompt, seed, step) triple of amortized token training
(``amortized.train``) both run.
"""

from __future__ import annotations

import contextlib

import torch

from . import schedule
from .config import GuidanceConfig
from .host import GuidanceHost, PredictX0
from .judge import decode_pairs, pair_flow
from .losses import LossTerms, flow_speed, speed_loss, total_loss


def no_timer(_name: str):
    return contextlib.nullcontext()


def token_loss(host: GuidanceHost, tokens: torch.Tensor, tokens0: torch.Tensor, predict_x0: PredictX0, flow, disc,
               cfg: GuidanceConfig, step: int, iteration: int, timer=no_timer,
               autocast=contextlib.nullcontext, one_frame_at_a_time: bool = False, speed_ref: torch.Tensor | None = None,
               lambda_speed: float = 0.0) -> tuple[LossTerms, list[tuple[int, int]]]:
    """The MotionPrompt loss of ``tokens`` at one sampling step: prompt + tokens -> text encoder -> x0 of every
    frame -> decode the frames of ``cfg.pairs`` random pairs (from ``cfg.seed``, ``step``, ``iteration``) ->
    flow -> D -> loss terms. Per-sample guidance (one inner iteration) and amortized token training (one
    (prompt, seed, step) of a batch) both run exactly this; gradients flow back to ``tokens``.

    A predictor with ``frame_count`` is told which frames the pairs score (``predict_x0(cond, frames)``): a host
    with context windows runs only the windows those frames come from (the pairs are the same either way).

    ``speed_ref`` (``pair_speed`` of the same pairs without the token) adds ``lambda_speed`` x ``speed_loss``
    (amortized token training's option; the per-sample mode has no such term)."""
    with timer("encode"):
        cond = host.encode(tokens)
    with timer("unet_forward"), autocast():
        x0, pairs = _scored_x0(predict_x0, cond, cfg, step, iteration)
    with timer("vae_decode"):
        a, b = decode_pairs(host, x0, pairs, one_frame_at_a_time)
    device_type = tokens.device.type
    with timer("flow"), torch.autocast(device_type, enabled=False):
        flow_norm = pair_flow(flow, a, b)
    with timer("discriminator"), torch.autocast(device_type, enabled=False):
        logits = disc(flow_norm)
        terms = total_loss(logits, flow_norm, tokens, tokens0, cfg.lambda_disc, cfg.lambda_tv, cfg.lambda_drift,
                           cfg.disc_loss)
        if speed_ref is not None and lambda_speed > 0:
            terms.speed = speed_loss(flow_norm, speed_ref)
            terms.total = terms.total + lambda_speed * terms.speed
    return terms, pairs


def _scored_x0(predict_x0: PredictX0, cond: torch.Tensor, cfg: GuidanceConfig, step: int, iteration: int):
    """x0 for ``cond`` and the frame pairs this (step, iteration) scores."""
    count = getattr(predict_x0, "frame_count", None)
    if count:
        pairs = schedule.sample_pairs(cfg, count, step, iteration)
        return predict_x0(cond, sorted({f for p in pairs for f in p})), pairs
    x0 = predict_x0(cond)
    return x0, schedule.sample_pairs(cfg, x0.shape[0], step, iteration)


@torch.no_grad()
def pair_speed(host: GuidanceHost, cond: torch.Tensor, predict_x0: PredictX0, flow, cfg: GuidanceConfig, step: int,
               iteration: int) -> torch.Tensor:
    """``losses.flow_speed`` of the pairs ``token_loss`` scores at (step, iteration), for conditioning ``cond``
    (e.g. the prompt alone: the speed a token should keep), without gradients."""
    x0, pairs = _scored_x0(predict_x0, cond, cfg, step, iteration)
    a, b = decode_pairs(host, x0, pairs)
    with torch.autocast(a.device.type, enabled=False):
        return flow_speed(pair_flow(flow, a, b))


def token_step(tokens: torch.Tensor, tokens0: torch.Tensor, grad: torch.Tensor, grad_norm: float,
               cfg: GuidanceConfig, opt: torch.optim.Optimizer | None) -> None:
    """One update of ``tokens`` (in place): Adam through ``opt``, or without one normalized SGD, a step of
    ``lr * |T0|`` (mean token norm) along -g/|g| whatever the gradient's size. ``grad_clip`` caps |g| first."""
    with torch.no_grad():
        if cfg.grad_clip > 0 and grad_norm > cfg.grad_clip:
            grad = grad * (cfg.grad_clip / grad_norm)
        if opt is not None:
            tokens.grad = grad
            opt.step()
            tokens.grad = None
        elif grad_norm > 0:
            scale = tokens0.norm(dim=-1).mean()
            tokens -= cfg.lr * scale * grad / grad_norm
