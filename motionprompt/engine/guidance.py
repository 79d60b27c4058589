"""One generation's MotionPrompt guidance: learnable tokens, the inner loop, and what cond to use.

``MotionGuide.conditioning(step, total, predict_x0)`` is the single entry point a host's sampler
calls once per sampling step. It returns the conditioning to use for that step, or ``None`` for
"use your own", and never raises for a failure inside guidance: it records why, frees memory and
disables itself so the user's generation finishes unguided.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..disc.checkpoint import Discriminator
from ..flow.registry import FlowEstimator
from . import schedule
from .config import GuidanceConfig
from .host import GuidanceHost, PredictX0
from .judge import decode_pairs, pair_flow
from .losses import LossTerms, total_loss

log = logging.getLogger("motionprompt")


@dataclass
class IterationRecord:
    total: float
    disc: float
    tv: float
    drift: float
    d_score: float
    grad_norm: float
    pairs: list
    skipped: str | None = None


@dataclass
class StepRecord:
    step: int
    total_steps: int
    iterations: list[IterationRecord] = field(default_factory=list)
    seconds: float = 0.0
    times: dict[str, float] = field(default_factory=dict)
    peak_mem_bytes: int | None = None
    status: str = "ok"

    def to_dict(self) -> dict:
        return asdict(self)


class GuidanceInterrupted(Exception):
    pass


class _Timer:
    """Adds wall time per phase; with ``sync`` it waits for CUDA so the split is real."""

    def __init__(self, times: dict, sync: bool):
        self.times, self.sync = times, sync and torch.cuda.is_available()

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self.sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                torch.cuda.synchronize()
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0


class MotionGuide:
    def __init__(
        self,
        cfg: GuidanceConfig,
        host: GuidanceHost,
        flow: FlowEstimator | None,
        discriminator: Discriminator | nn.Module | None,
        device: torch.device | str | None = None,
        start_tokens: torch.Tensor | None = None,
    ):
        """``start_tokens`` [n, D] (or ``cfg.start_token``, a file): start there instead of the init word.
        With ``inner_iters`` 0 nothing is optimized and ``flow``/``discriminator`` may be None."""
        self.cfg = cfg.validate()
        self.host = host
        self.flow = flow
        if isinstance(discriminator, Discriminator):
            discriminator.check_flow(cfg.flow)
            discriminator = discriminator.model
        if cfg.inner_iters and (flow is None or discriminator is None):
            raise ValueError("guidance with an inner loop needs a flow estimator and a discriminator")
        self.disc = discriminator.eval().requires_grad_(False) if discriminator is not None else None
        if flow is not None and flow.settings.backend != cfg.flow.backend:
            raise ValueError(f"flow estimator is {flow.settings.backend!r} but settings ask for {cfg.flow.backend!r}")
        init = host.embed_init(cfg.init_word, cfg.n_tokens).detach()
        if start_tokens is None and cfg.start_token:
            from ..amortized.token_file import load_token

            start_tokens = load_token(cfg.start_token, width=init.shape[-1]).vectors
        if start_tokens is not None:
            if tuple(start_tokens.shape) != tuple(init.shape):
                raise ValueError(f"start token is {tuple(start_tokens.shape)} but this host's tokens are "
                                 f"{tuple(init.shape)} ({cfg.n_tokens} token(s) of its embedding width)")
            init = start_tokens.detach().to(init.device)
        elif cfg.inner_iters == 0:
            raise ValueError("inner_iters 0 (no inner loop) needs a start token: an amortized token file")
        #: tokens start from a given tensor (an amortized token): it belongs to the prompt, so the steps that
        #: use the "original" conditioning get the prompt with it, and the drift anchors to it
        self.started = start_tokens is not None
        self.device = torch.device(device) if device is not None else init.device
        self.tokens0 = init.to(self.device, torch.float32).clone()
        self.tokens = self.tokens0.clone().requires_grad_(True)
        self.records: list[StepRecord] = []
        self.disabled: str | None = None
        self._cond_opt: torch.Tensor | None = None
        self._cond_init: torch.Tensor | None = None
        # called as observe(step, predict_x0) after each optimized step (demo / bench measurements)
        self.observers: list[Callable[[int, PredictX0], None]] = []

    # ------------------------------------------------------------------ public
    def conditioning(self, step: int, total_steps: int, predict_x0: PredictX0) -> torch.Tensor | None:
        if self.disabled:
            return None
        phase = schedule.phase(self.cfg, step, total_steps)
        try:
            if phase == "before":
                return self.start_conditioning()
            if schedule.optimizes(self.cfg, step, total_steps):
                self._optimize(step, total_steps, predict_x0)
                for observe in self.observers:
                    observe(step, predict_x0)
            if phase == "window":
                return self._cond_opt
            return self._cond_opt if self.cfg.cond_after == "optimized" else self._original()
        except GuidanceInterrupted:
            return self._cond_opt if phase == "window" else self._original()
        except Exception as exc:  # never break the user's generation
            self._fail(step, exc)
            return None

    def start_conditioning(self) -> torch.Tensor | None:
        """The conditioning before any optimization: the init tokens when ``cond_before`` says so, the prompt
        with the start token when there is one, else None (the host's own). Also what a host whose first step
        cannot be optimized uses there (the WebUI: AnimateDiff hooks its UNet at that step)."""
        if self.disabled:
            return None
        return self._init_cond() if self.cfg.cond_before == "init_tokens" else self._original()

    def summary(self) -> dict:
        """What a host logs / writes into infotext after the run."""
        done = [r for r in self.records if r.iterations]
        first = [r.iterations[0].d_score for r in done]
        last = [r.iterations[-1].d_score for r in done]
        tv_first = [r.iterations[0].tv for r in done]
        tv_last = [r.iterations[-1].tv for r in done]
        peaks = [r.peak_mem_bytes for r in self.records if r.peak_mem_bytes is not None]
        return {
            "steps_guided": len(done),
            "iterations": sum(len(r.iterations) for r in done),
            "d_score_first": sum(first) / len(first) if first else None,
            "d_score_last": sum(last) / len(last) if last else None,
            "tv_first": sum(tv_first) / len(tv_first) if tv_first else None,
            "tv_last": sum(tv_last) / len(tv_last) if tv_last else None,
            "seconds": sum(r.seconds for r in self.records),
            "peak_mem_bytes": max(peaks) if peaks else None,
            "token_drift": float((self.tokens.detach() - self.tokens0).norm()),
            "disabled": self.disabled,
        }

    # ------------------------------------------------------------------ internals
    def _original(self) -> torch.Tensor | None:
        """The user's prompt: the host's own conditioning (None), or with a start token, the prompt with it."""
        return self._init_cond() if self.started else None

    def _init_cond(self) -> torch.Tensor:
        if self._cond_init is None:
            with torch.no_grad():
                self._cond_init = self.host.encode(self.tokens0).detach()
        return self._cond_init

    def _fail(self, step: int, exc: BaseException) -> None:
        if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
            reason = f"out of memory at step {step}; try fewer frame pairs or inner iterations (CLI: the low_vram preset)"
        else:
            reason = f"{type(exc).__name__} at step {step}: {exc}"
        self.disabled = reason
        if self.records and self.records[-1].step == step:
            self.records[-1].status = f"error: {reason}"
        self._cond_opt = None
        log.warning("MotionPrompt guidance disabled, sampling continues without it: %s", reason)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _autocast(self):
        mode = self.cfg.unet_autocast
        if mode == "none":
            return contextlib.nullcontext()
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[mode]
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=dtype)
        if self.device.type == "cpu" and dtype == torch.bfloat16:
            return torch.autocast("cpu", dtype=dtype)
        return contextlib.nullcontext()  # fp16 autocast on CPU is slow and lossy: ignore it

    def _optimize(self, step: int, total_steps: int, predict_x0: PredictX0) -> None:
        cfg = self.cfg
        if cfg.inner_iters == 0:  # the amortized token as it is: nothing to optimize, no UNet call
            self._cond_opt = self._init_cond()
            return
        record = StepRecord(step, total_steps)
        self.records.append(record)
        timer = _Timer(record.times, cfg.sync_timing)
        cuda = self.device.type == "cuda" and torch.cuda.is_available()
        t0 = time.perf_counter()
        opt = torch.optim.Adam([self.tokens], lr=cfg.lr) if cfg.optimizer == "adam" else None
        try:
            for it in range(cfg.inner_iters):
                if self.host.interrupted():
                    record.status = "interrupted"
                    raise GuidanceInterrupted
                record.iterations.append(self._iteration(step, it, predict_x0, opt, timer))
        finally:
            self.tokens.grad = None
            record.seconds = time.perf_counter() - t0
            if cuda:
                record.peak_mem_bytes = int(torch.cuda.max_memory_allocated(self.device))
        with timer("encode"), torch.no_grad():
            self._cond_opt = self.host.encode(self.tokens.detach()).detach()
        record.seconds = time.perf_counter() - t0

    def _iteration(self, step: int, it: int, predict_x0: PredictX0, opt, timer: _Timer) -> IterationRecord:
        cfg = self.cfg
        with torch.enable_grad():
            terms, pairs = token_loss(self.host, self.tokens, self.tokens0, predict_x0, self.flow, self.disc, cfg, step,
                                      it, timer, self._autocast)
            with timer("backward"):
                (grad,) = torch.autograd.grad(terms.total, [self.tokens])
        grad_norm = float(grad.norm())
        values = {k: float(getattr(terms, k).detach()) for k in ("total", "disc", "tv", "drift", "d_score")}
        del terms
        rec = IterationRecord(**values, grad_norm=grad_norm, pairs=[list(p) for p in pairs])
        if not all(map(_finite, [*values.values(), grad_norm])):
            rec.skipped = "non-finite loss or gradient"
            return rec
        with timer("optimizer"):
            token_step(self.tokens, self.tokens0, grad, grad_norm, cfg, opt)
        return rec


def _no_timer(_name: str):
    return contextlib.nullcontext()


def token_loss(host: GuidanceHost, tokens: torch.Tensor, tokens0: torch.Tensor, predict_x0: PredictX0, flow, disc,
               cfg: GuidanceConfig, step: int, iteration: int, timer=_no_timer,
               autocast=contextlib.nullcontext) -> tuple[LossTerms, list[tuple[int, int]]]:
    """The MotionPrompt loss of ``tokens`` at one sampling step: prompt + tokens -> text encoder -> x0 of every
    frame -> decode the frames of ``cfg.pairs`` random pairs (from ``cfg.seed``, ``step``, ``iteration``) ->
    flow -> D -> loss terms. Per-sample guidance (one inner iteration) and amortized token training (one
    (prompt, seed, step) of a batch) both run exactly this; gradients flow back to ``tokens``."""
    with timer("encode"):
        cond = host.encode(tokens)
    with timer("unet_forward"), autocast():
        x0 = predict_x0(cond)
    pairs = schedule.sample_pairs(cfg, x0.shape[0], step, iteration)
    with timer("vae_decode"):
        a, b = decode_pairs(host, x0, pairs)
    device_type = tokens.device.type
    with timer("flow"), torch.autocast(device_type, enabled=False):
        flow_norm = pair_flow(flow, a, b)
    with timer("discriminator"), torch.autocast(device_type, enabled=False):
        logits = disc(flow_norm)
        terms = total_loss(logits, flow_norm, tokens, tokens0, cfg.lambda_disc, cfg.lambda_tv, cfg.lambda_drift,
                           cfg.disc_loss)
    return terms, pairs


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


def _finite(v: float) -> bool:
    return v == v and v not in (float("inf"), float("-inf"))
