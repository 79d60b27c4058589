"""One generation's MotionPrompt guidance: learnable tokens, the inner loop, and what cond to use.

``MotionGuide.conditioning(step, total, predict_x0)`` is the single entry point a host's sampler
calls once per sampling step. It returns the conditioning to use for that step, or ``None`` for
"use your own", and never raises for a failure inside guidance: it records why, frees memory and
disables itself so the user's generation finishes unguided.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..disc.checkpoint import Discriminator
from ..flow.registry import FlowEstimator
from . import memory_plan, schedule
from .checkpointing import checkpointed
from .config import GuidanceConfig
from .host import GuidanceHost, PredictX0
from .saved_bytes import SavedBytes
from .token_loss import token_loss, token_step

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
    memory_path: str = ""  # speed | balanced | low (``memory_plan``)
    predicted_bytes: int | None = None  # what the plan predicted above the allocation at the step's start
    saved_bytes: dict = field(default_factory=dict)  # first iteration's bytes kept for the backward, per phase
    start_bytes: int | None = None  # CUDA: allocated when the step began

    def to_dict(self) -> dict:
        return asdict(self)


class GuidanceInterrupted(Exception):
    pass


class _Timer:
    """Adds wall time per phase; with ``sync`` it waits for CUDA so the split is real."""

    #: forward phases -> the phase ``saved_bytes`` counts them under
    SAVED: ClassVar[dict[str, str]] = {"encode": "text", "unet_forward": "unet", "vae_decode": "decode", "flow": "flow", "discriminator": "disc"}

    def __init__(self, times: dict, sync: bool, saved: SavedBytes | None = None):
        self.times, self.sync = times, sync and torch.cuda.is_available()
        self.saved = saved

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self.sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        phase = self.saved.in_phase(self.SAVED[name]) if self.saved is not None and name in self.SAVED else None
        try:
            with phase or contextlib.nullcontext():
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
        start_tokens: torch.Tensor | Callable[[int], torch.Tensor] | None = None,
    ):
        """``start_tokens`` [n, D]: start there instead of the init word; or a callable that gets the host's token
        width and returns them (``amortized.token_file.start_tokens(cfg)`` reads ``cfg.start_token`` that way: the
        engine opens no file). With ``inner_iters`` 0 nothing is optimized and ``flow``/``discriminator`` may be None."""
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
        if callable(start_tokens):
            start_tokens = start_tokens(init.shape[-1])
        elif start_tokens is None and cfg.start_token:
            raise ValueError(f"start token {cfg.start_token!r}: pass its vectors as start_tokens "
                             "(amortized.token_file.start_tokens(cfg) reads the file)")
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
        self.plan: memory_plan.Plan | None = None  # the last guided step's memory path
        self._floor = 0  # index in memory_plan.PATHS below which auto no longer goes (after an out-of-memory)
        self._scale: float | None = None  # measured / predicted saved bytes of this job, once measured
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
        except GuidanceSkipped:
            return None
        except Exception as exc:  # never break the user's generation
            failure = exc
        # out of the except block: Python 3.10 keeps the traceback (and the loop's tensors its frames hold) alive
        # inside it, so memory is freed only here
        failure.__traceback__ = None
        if _out_of_memory(failure) and self._lower_path(step):
            return self._cond_opt if phase == "window" else self._original()
        self._fail(step, failure)
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
        measured = [r for r in done if r.peak_mem_bytes is not None and r.start_bytes is not None]
        # the prediction and the measurement of one step: the one that peaked highest (else the last guided one)
        worst = max(measured, key=lambda r: r.peak_mem_bytes - r.start_bytes) if measured else (done[-1] if done
                                                                                               else None)
        kept = [sum(r.saved_bytes["bytes"].values()) for r in done if r.saved_bytes]
        return {
            "steps_guided": len(done),
            "iterations": sum(len(r.iterations) for r in done),
            "d_score_first": sum(first) / len(first) if first else None,
            "d_score_last": sum(last) / len(last) if last else None,
            "tv_first": sum(tv_first) / len(tv_first) if tv_first else None,
            "tv_last": sum(tv_last) / len(tv_last) if tv_last else None,
            "seconds": sum(r.seconds for r in self.records),
            "peak_mem_bytes": max(peaks) if peaks else None,
            # the memory path(s) the guided steps took, the plan's prediction and the measured peak above each step's
            # start (CUDA), and the bytes one iteration kept for its backward (any device)
            "memory_paths": sorted({r.memory_path for r in done if r.memory_path}),
            "predicted_step_bytes": worst.predicted_bytes if worst is not None else None,
            "measured_step_bytes": (worst.peak_mem_bytes - worst.start_bytes) if measured else None,
            "kept_bytes": max(kept) if kept else None,
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

    def _lower_path(self, step: int) -> bool:
        """After an out-of-memory under ``auto``: what the loop held is freed, this step goes on unguided and
        the next guided steps take the next lower path. False when there is none (or the path was asked for)."""
        path = self.plan.path if self.plan is not None else None
        if self.cfg.memory != "auto" or path is None or path == memory_plan.PATHS[-1]:
            return False
        if not hasattr(self.host, "checkpoint_blocks"):  # every path runs as speed here: lowering cannot help
            return False
        self._floor = memory_plan.PATHS.index(path) + 1
        self.tokens.grad = None
        if self.records and self.records[-1].step == step:
            self.records[-1].status = f"out of memory on the {path} path; unguided, next steps lower"
        log.warning("MotionPrompt: out of memory on the %s memory path at step %d; this step continues unguided, "
                    "the next guided steps take the %s path", path, step, memory_plan.PATHS[self._floor])
        _free_memory()
        return True

    def _fail(self, step: int, exc: BaseException) -> None:
        if _out_of_memory(exc):
            reason = (f"out of memory at step {step} on the {self.plan.path if self.plan else '?'} memory path; "
                      "try memory low, fewer frame pairs or inner iterations")
        else:
            reason = f"{type(exc).__name__} at step {step}: {exc}"
        self.disabled = reason
        if self.records and self.records[-1].step == step:
            self.records[-1].status = f"error: {reason}"
        self._cond_opt = None
        log.warning("MotionPrompt guidance disabled, sampling continues without it: %s", reason)
        _free_memory()

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
        cuda = self.device.type == "cuda" and torch.cuda.is_available()
        if cuda:
            # the bench (sync_timing) resets CUDA's peak per step to read each step's own; a host's job is left
            # alone (A1111's and Forge's own memory figures read the same counters): there the step's peak is the
            # job's peak so far, which a guided step's is in practice
            if cfg.sync_timing:
                torch.cuda.reset_peak_memory_stats(self.device)
            record.start_bytes = int(torch.cuda.memory_allocated(self.device))
        try:
            plan = self._choose_path(predict_x0)  # nothing fits: raised before any work is spent
        except GuidanceSkipped as exc:
            record.status = f"skipped: {exc}"
            raise
        record.memory_path, record.predicted_bytes = plan.path, plan.predicted.get(plan.path)
        blocks = self._blocks(plan.path)
        t0 = time.perf_counter()
        opt = torch.optim.Adam([self.tokens], lr=cfg.lr) if cfg.optimizer == "adam" else None
        try:
            with checkpointed(blocks):
                for it in range(cfg.inner_iters):
                    if self.host.interrupted():
                        record.status = "interrupted"
                        raise GuidanceInterrupted
                    saved = SavedBytes() if it == 0 else None
                    timer = _Timer(record.times, cfg.sync_timing, saved)
                    record.iterations.append(self._iteration(step, it, predict_x0, opt, timer, plan.path == "low"))
                    if saved is not None:
                        record.saved_bytes = saved.to_dict()
                        self._learn(plan, saved, predict_x0, record.iterations[-1].pairs)
        finally:
            self.tokens.grad = None
            record.seconds = time.perf_counter() - t0
            if cuda:
                record.peak_mem_bytes = int(torch.cuda.max_memory_allocated(self.device))
        with timer("encode"), torch.no_grad():
            self._cond_opt = self.host.encode(self.tokens.detach()).detach()
        record.seconds = time.perf_counter() - t0

    def _choose_path(self, predict_x0: PredictX0) -> memory_plan.Plan:
        shape = _job_shape(predict_x0, self.cfg)
        free = memory_plan.free_bytes(self.device)
        try:
            plan = memory_plan.choose(self.cfg.memory, shape, free, floor=self._floor, scale=self._scale)
        except MemoryError as exc:
            self.disabled = str(exc)
            log.warning("MotionPrompt guidance skipped, sampling continues without it: %s", exc)
            raise GuidanceSkipped(str(exc)) from exc
        if plan.path != "speed" and not hasattr(self.host, "checkpoint_blocks"):
            plan.why = f"{plan.why}; this host has no checkpointing: ran as speed".lstrip("; ")
            plan.path = "speed"
        self.plan = plan
        return plan

    def _learn(self, plan: memory_plan.Plan, saved: SavedBytes, predict_x0: PredictX0, pairs) -> None:
        """This job's kept bytes (UNet + decode) against what the table says they are for what ran (the frames
        the UNet ran with gradients, ``ran_frames`` where the predictor says so, and the frames decoded): the ratio
        scales every later prediction of this job (another UNet than SD1.5's, another attention kernel)."""
        plan.measured = dict(saved.bytes)
        if plan.shape is None:
            return
        ran = dataclasses.replace(plan.shape, decoded_frames=len({f for p in pairs for f in p}))
        if getattr(predict_x0, "ran_frames", None):
            ran.grad_frames = int(predict_x0.ran_frames)
        table = memory_plan.predict(ran, kept_only=True)[plan.path]
        measured = saved.bytes.get("unet", 0) + saved.bytes.get("decode", 0)
        if table and measured:
            self._scale = measured / table

    def _blocks(self, path: str) -> list[nn.Module]:
        if path == "speed" or not hasattr(self.host, "checkpoint_blocks"):
            return []
        return list(self.host.checkpoint_blocks(decoder=path == "low"))

    def _iteration(self, step: int, it: int, predict_x0: PredictX0, opt, timer: _Timer,
                   one_frame_at_a_time: bool = False) -> IterationRecord:
        cfg = self.cfg
        with torch.enable_grad(), (timer.saved.active() if timer.saved is not None else contextlib.nullcontext()):
            terms, pairs = token_loss(self.host, self.tokens, self.tokens0, predict_x0, self.flow, self.disc, cfg, step,
                                      it, timer, self._autocast, one_frame_at_a_time)
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


class GuidanceSkipped(Exception):
    """No memory path fits: the step (and guidance) goes on without any work spent."""


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _job_shape(predict_x0: PredictX0, cfg: GuidanceConfig) -> memory_plan.JobShape | None:
    """What the predictor says about the UNet call it makes (``shape_hint``: frames with grad, latent h*w,
    element size), with the frames decoded per iteration from the settings."""
    hint = getattr(predict_x0, "shape_hint", None)
    if hint is None:
        return None
    grad_frames, latent_pixels, element_size = hint(cfg.pairs)
    return memory_plan.JobShape(grad_frames, latent_pixels, min(2 * cfg.pairs, grad_frames), element_size)


def _finite(v: float) -> bool:
    return v == v and v not in (float("inf"), float("-inf"))
