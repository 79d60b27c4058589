"""Cost of guidance: plain and guided sampling of the same job in one process.

``run_bench`` samples the job once without guidance and once per preset with it (same model, seed,
steps, frames, size), then reports

* wall-time ratio guided / plain (the guided wall time excludes the bench's own disc-loss probe), and a
  steadier ``time_ratio_steady`` = (P + guidance time) / P, where P is the fastest execution of the plain
  sampling work seen in the process (the plain run, or a guided run minus its guidance time): on a
  shared CPU another process can slow one run by 2x, which the raw ratio inherits;
* peak-memory ratio guided / plain. On CUDA: ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats`` (tensors only: weights + activations). On CPU: the process's peak RSS
  during the run, read from ``VmHWM`` in ``/proc/self/status`` after resetting it by writing 5 to
  ``/proc/self/clear_refs`` (exact, kernel-tracked; weights, activations, allocator caches, libraries);
  where that reset is not allowed, ``VmRSS`` sampled every 5 ms by a thread. ``peak_mem_delta_ratio``
  compares only the rise above the RSS / allocation at the start of each run (the transient);
* where guidance time goes, from ``MotionGuide`` records (text encoder, UNet forward, VAE decode,
  flow, discriminator, backward, optimizer) with the backward split by gradient-arrival hooks into
  discriminator, flow, VAE, UNet and text-encoder parts; ``untimed`` is the remainder of the step
  time (pair sampling, bookkeeping). ``unet_share`` = (UNet forward + backward) / guidance time;
* the discriminator-loss reduction: per guided step, disc loss at iteration 0 (tokens as they entered
  the step) minus the disc loss with the tokens after the step's last update on the *same* pairs,
  latents and timestep (one extra no-grad forward per guided step, timed and subtracted), mean over
  steps (``disc_drop``) and summed (``disc_drop_total``). With a random discriminator it measures how
  well the optimizer moves the loss, not motion quality.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import os
import platform
import threading
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import __version__
from ..engine import schedule
from ..engine.config import PRESETS, FlowSettings, GuidanceConfig, preset
from ..flow.policy import resolve_flow

_log = logging.getLogger("motionprompt")

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

DEFAULT_JOBS = {  # (model, device) -> steps, frames, height, width
    ("tiny", "cpu"): (25, 16, 64, 64),
    ("tiny", "cuda"): (25, 16, 64, 64),
    ("sd15-random", "cpu"): (10, 8, 64, 64),
    ("sd15-random", "cuda"): (25, 16, 512, 512),
}


# ----------------------------------------------------------------------------- memory
def _proc_status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trim() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back so each run starts from the same RSS


class MemoryMeter:
    """Peak memory of one run; see the module doc for what is measured on CPU and CUDA."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.method = ""
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled = 0

    def __enter__(self) -> MemoryMeter:
        _trim()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return self
        self.start = _proc_status("VmRSS") or 0
        if _reset_hwm() and _proc_status("VmHWM") is not None:
            self.method = "VmHWM (peak RSS, reset via /proc/self/clear_refs)"
        else:
            self.method = "VmRSS sampled every 5 ms"
            self._sampled = self.start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._sampled = max(self._sampled, _proc_status("VmRSS") or 0)

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._sampled, _proc_status("VmRSS") or 0)
        else:
            self.peak = _proc_status("VmHWM") or 0

    def to_dict(self) -> dict:
        return {"start_bytes": self.start, "peak_bytes": self.peak, "delta_bytes": max(0, self.peak - self.start)}


# ----------------------------------------------------------------------------- backward split
class _Spy:
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


class _SpyHost:
    """Delegates to a ``DiffusersVideoHost``; marks cond, x0 and decoded frames for the backward split."""

    def __init__(self, host, spy: _Spy):
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

        def wrapped(cond):
            x0 = predict(cond)
            self._spy.watch(x0, "x0")
            return x0

        return wrapped


class _SpyModule(nn.Module):
    def __init__(self, inner: nn.Module, spy: _Spy, tag: str):
        super().__init__()
        self.inner, self._spy, self._tag = inner, spy, tag
        self.settings = getattr(inner, "settings", None)

    def forward(self, *args):
        out = self.inner(*args)
        self._spy.watch(out, self._tag)
        return out


# ----------------------------------------------------------------------------- settings and model
@dataclass
class BenchSettings:
    model: str = "tiny"  # tiny | sd15-random
    device: str = "cpu"
    dtype: str = "auto"  # auto = fp16 on CUDA, fp32 on CPU
    presets: list[str] = field(default_factory=lambda: ["paper"])
    steps: int | None = None  # None: DEFAULT_JOBS for (model, device)
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    cfg_scale: float = 7.5
    seed: int = 0
    prompt: str = "a white fox running on a rock, snow"
    flow_backend: str | None = "lk_pyramid"  # None: the preset's (or the checkpoint's) backend
    flow_size: int | None = None
    flow_iters: int | None = None
    random_flow: bool = False
    flow_weights: list[str] = field(default_factory=list)
    disc: str | None = None  # checkpoint path; None = random CNN discriminator
    warmup: bool = True
    probe: bool = True
    repeat: int = 1  # interleaved repeats of every run; the fastest is reported
    threads: int | None = None  # torch CPU threads (None: torch's default)

    def job(self) -> dict:
        dev = "cuda" if self.device.startswith("cuda") else "cpu"
        steps, frames, height, width = DEFAULT_JOBS.get((self.model, dev), DEFAULT_JOBS[("tiny", "cpu")])
        return {"steps": self.steps or steps, "num_frames": self.frames or frames, "height": self.height or height,
                "width": self.width or width, "cfg_scale": self.cfg_scale, "seed": self.seed}


def build_model(name: str, device: torch.device, dtype: str = "auto"):
    from ..hosts.diffusers.models import sd15_random_model, tiny_model

    if name == "tiny":
        model = tiny_model(seed=0)
    elif name == "sd15-random":
        model = sd15_random_model(seed=0)
    else:
        raise ValueError(f"unknown bench model {name!r}; choose tiny or sd15-random")
    if dtype == "auto":
        dtype = "fp16" if device.type == "cuda" else "fp32"
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    for m in (model.unet, model.vae, model.text_encoder):
        m.to(device)
        if m.dtype != torch_dtype:
            m.to(torch_dtype)
    return model, dtype


def guidance_config(name: str, s: BenchSettings, disc_flow=None) -> GuidanceConfig:
    cfg = preset(name)
    # the engine's flow policy: a checkpoint's flow wins; --flow-backend only picks the flow when there is
    # no checkpoint (a random D); --flow-size/--flow-iters are explicit requests (a note if they differ from D)
    fallback = FlowSettings(s.flow_backend or cfg.flow.backend, cfg.flow.size, cfg.flow.iters)
    choice = resolve_flow(disc_flow, fallback, None, s.flow_size, s.flow_iters)
    cfg.flow = choice.settings
    for note in choice.notes:
        _log.warning("bench: %s", note)
    cfg.sync_timing = s.device.startswith("cuda")
    return cfg.validate()


# ----------------------------------------------------------------------------- runs
def _timed_sample(host, guide, job: dict, device: torch.device, probe_times: list[float] | None = None) -> dict:
    from ..hosts.diffusers.sampler import sample

    meter = MemoryMeter(device)
    with meter:
        t0 = time.perf_counter()
        sample(host, guide, **job)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
    probe = sum(probe_times) if probe_times else 0.0
    return {"seconds": wall - probe, "probe_seconds": probe, **meter.to_dict(), "memory_method": meter.method}


def _disc_loss_after(guide, predict, pairs: list) -> float:
    """Disc loss of the tokens after the step's updates, on the given pairs (no grad)."""
    from ..engine.judge import x0_pair_logits
    from ..engine.losses import disc_loss

    cond = guide._cond_opt if guide._cond_opt is not None else guide.host.encode(guide.tokens.detach())
    with torch.no_grad():
        with guide._autocast():
            x0 = predict(cond)
        return float(disc_loss(x0_pair_logits(guide, x0, pairs), guide.cfg.disc_loss))


def _install_probe(guide, after: dict[int, float], probe_times: list[float]) -> None:
    def probe(step, predict):
        t0 = time.perf_counter()
        try:
            after[step] = _disc_loss_after(guide, predict, guide.records[-1].iterations[0].pairs)
        finally:
            probe_times.append(time.perf_counter() - t0)

    guide.observers.append(probe)


def _phases(guide, spy: _Spy) -> tuple[dict, float]:
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


def _keep_fastest(best: dict | None, new: dict) -> dict:
    """The faster run of the two; the peak memory is the larger of both (it does not depend on speed)."""
    if best is None:
        new["repeats"] = 1
        return new
    keep = new if new["seconds"] < best["seconds"] else best
    keep["repeats"] = best["repeats"] + 1
    keep["peak_bytes"] = max(best["peak_bytes"], new["peak_bytes"])
    keep["delta_bytes"] = max(best["delta_bytes"], new["delta_bytes"])
    return keep


def _guided_once(name: str, s: BenchSettings, model, job: dict, device: torch.device, ckpt, log) -> dict:
    from ..disc.models import build_discriminator
    from ..engine.guidance import MotionGuide
    from ..flow.registry import build_flow
    from ..hosts.diffusers.host import DiffusersVideoHost

    cfg = guidance_config(name, s, ckpt.flow if ckpt else None)
    host = DiffusersVideoHost(model, s.prompt, "", cfg.n_tokens, device, grad_checkpointing=cfg.grad_checkpointing)
    flow = build_flow(cfg.flow, s.flow_weights, allow_random=s.random_flow).to(device)
    torch.manual_seed(s.seed)
    if ckpt is not None:
        ckpt.check_flow(cfg.flow)
        disc_model = ckpt.model
    else:
        disc_model = build_discriminator("cnn").to(device)
    spy = _Spy(sync=cfg.sync_timing)
    guide = MotionGuide(cfg, _SpyHost(host, spy), _SpyModule(flow, spy, "flow"), _SpyModule(disc_model, spy, "logits"),
                        device=device)
    after: dict[int, float] = {}
    probe_times: list[float] = []
    if s.probe:
        _install_probe(guide, after, probe_times)
    run = _timed_sample(_SpyHost(host, spy), guide, job, device, probe_times)
    phases, guidance = _phases(guide, spy)
    summary = guide.summary()
    done = [r for r in guide.records if r.iterations]
    first = [r.iterations[0].disc for r in done]
    last = [r.iterations[-1].disc for r in done]
    drops = [r.iterations[0].disc - after[r.step] for r in done if r.step in after]
    run.update({
        "preset": name,
        "config": {"inner_iters": cfg.inner_iters, "every_k": cfg.every_k, "window": [cfg.window_start, cfg.window_end],
                   "flow": cfg.flow.to_dict(), "unet_autocast": cfg.unet_autocast,
                   "grad_checkpointing": cfg.grad_checkpointing, "x0_mode": cfg.x0_mode},
        "guidance_seconds": guidance,
        "sampling_seconds": run["seconds"] - guidance,
        "steps_guided": summary["steps_guided"],
        "iterations": summary["iterations"],
        "seconds_per_iteration": guidance / summary["iterations"] if summary["iterations"] else None,
        "disabled": summary["disabled"],
        "nonfinite_iterations": sum(1 for r in done for it in r.iterations if it.skipped),
        "phases": phases,
        "phase_share": {k: v / guidance for k, v in phases.items()} if guidance else {},
        "unet_share": (phases["unet_forward"] + phases.get("unet_backward", 0.0)) / guidance if guidance else None,
        "backward_split": "unet_backward" in phases,
        "disc_first": _mean(first),
        "disc_last": _mean(last),
        "disc_after": _mean([after[r.step] for r in done if r.step in after]),
        "disc_drop": _mean(drops),
        "disc_drop_total": sum(drops) if drops else None,
        "d_score_first": summary["d_score_first"],
        "d_score_last": summary["d_score_last"],
        "guided_steps_at_25": len(schedule.guided_steps(cfg, 25)),
    })
    log(f"{name}: {run['seconds']:.2f} s, guidance {guidance:.2f} s, peak {run['peak_bytes'] / 2**30:.2f} GiB")
    del guide, flow, host
    _trim()
    return run


def _add_ratios(run: dict, plain: dict) -> None:
    """``time_ratio``: guided wall / plain wall as measured. ``time_ratio_steady``: (best plain + guidance) /
    best plain, with the best plain from ``run_bench`` (robust to slow-downs that hit only one run)."""
    best = plain.get("best_seconds", plain["seconds"])
    best_step = best / (plain["seconds"] / plain["seconds_per_step"])
    per_step = run["guidance_seconds"] / run["steps_guided"] if run["steps_guided"] else 0.0
    run["time_ratio"] = run["seconds"] / plain["seconds"]
    run["time_ratio_steady"] = (best + run["guidance_seconds"]) / best
    run["peak_mem_ratio"] = run["peak_bytes"] / plain["peak_bytes"] if plain["peak_bytes"] else None
    run["peak_mem_delta_ratio"] = run["delta_bytes"] / plain["delta_bytes"] if plain["delta_bytes"] else None
    run["iteration_vs_plain_step"] = run["seconds_per_iteration"] / best_step if run["seconds_per_iteration"] else None
    run["projected_time_ratio_at_25_steps"] = 1 + run["guided_steps_at_25"] * per_step / (25 * best_step)
    run.update(step_costs(run, best_step, plain["frames"]))


#: phases whose cost grows with the frame count (the UNet runs on every frame); the others work on the
#: sampled pairs or the token rows, whose number does not change with the video's length
FRAME_LINEAR = ("unet_forward", "unet_backward")


def step_costs(run: dict, step_seconds: float, frames: int, target_steps: int = 25, target_frames: int = 16) -> dict:
    """Guidance in units of one plain sampling step ("step-cost": the sampler's [cond; uncond] forward),
    and the whole-run ratio projected to ``target_steps`` x ``target_frames`` at the same frame size.

    Projection: a step-cost grows linearly with frames, and so do the UNet phases; text encoder, decode,
    flow, D and optimizer do not (fixed pairs / tokens). Every input is returned so the report can print it.
    """
    iters = run["iterations"]
    if not iters or not step_seconds:
        return {"step_cost_seconds": step_seconds, "iteration_step_costs": None, "phase_step_costs": {},
                "projection": None}
    phases = {k: v / iters / step_seconds for k, v in run["phases"].items()}
    per_iteration = run["guidance_seconds"] / iters / step_seconds
    scale = target_frames / frames
    linear = sum(phases.get(k, 0.0) for k in FRAME_LINEAR)
    at_target = (linear * scale + (per_iteration - linear)) / scale  # in step-costs of the target video
    iters_per_step = iters / run["steps_guided"]
    guided = run["guided_steps_at_25"] if target_steps == 25 else None
    ratio = 1 + guided * iters_per_step * at_target / target_steps if guided is not None else None
    return {
        "step_cost_seconds": step_seconds,
        "iteration_step_costs": per_iteration,
        "phase_step_costs": phases,
        "projection": {
            "steps": target_steps, "frames": target_frames, "measured_frames": frames,
            "guided_steps": guided, "iterations_per_guided_step": iters_per_step,
            "frame_linear_step_costs": linear, "iteration_step_costs_at_target": at_target,
            "time_ratio": ratio,
        },
    }


def run_bench(s: BenchSettings, log=print) -> dict:
    from ..disc.checkpoint import load_discriminator
    from ..disc.models import build_discriminator
    from ..engine.guidance import MotionGuide
    from ..flow.registry import build_flow
    from ..hosts.diffusers.host import DiffusersVideoHost

    for name in s.presets:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    device = torch.device(s.device)
    if s.threads:
        torch.set_num_threads(s.threads)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is available")
    job = s.job()
    notes = []
    t0 = time.perf_counter()
    model, dtype = build_model(s.model, device, s.dtype)
    build_seconds = time.perf_counter() - t0
    log(f"built {s.model} on {device} ({dtype}) in {build_seconds:.1f} s")
    if s.model == "sd15-random":
        notes.append("sd15-random: SD1.5 UNet + AnimateDiff-v2-sized motion modules, SD VAE, CLIP-L-sized text "
                     "model, all random weights: costs are real, images are noise")

    ckpt = load_discriminator(s.disc, device) if s.disc else None
    if ckpt is None:
        notes.append("random CNN discriminator (cost only; its score means nothing)")
    if s.random_flow:
        notes.append("random RAFT weights: flow is noise (cost only)")

    plain_host = DiffusersVideoHost(model, s.prompt, "", 1, device)
    if s.warmup:  # one-off costs (allocator growth, lazy init, first grad-mode pass) stay out of the timings
        from ..hosts.diffusers.sampler import sample

        sample(plain_host, None, **{**job, "steps": 2})
        warm_cfg = guidance_config(s.presets[0], s, ckpt.flow if ckpt else None)
        warm_cfg.inner_iters, warm_cfg.window_start, warm_cfg.window_end = 1, 0.0, 1.0
        warm_host = DiffusersVideoHost(model, s.prompt, "", warm_cfg.n_tokens, device,
                                       grad_checkpointing=warm_cfg.grad_checkpointing)
        torch.manual_seed(s.seed)
        warm_disc = ckpt if ckpt is not None else build_discriminator("cnn").to(device)
        warm_flow = build_flow(warm_cfg.flow, s.flow_weights, allow_random=s.random_flow).to(device)
        sample(warm_host, MotionGuide(warm_cfg, warm_host, warm_flow, warm_disc), **{**job, "steps": 1})
        log(f"warm-up done at {time.perf_counter() - t0:.1f} s")

    def plain_once() -> dict:
        out = _timed_sample(plain_host, None, job, device)
        out["seconds_per_step"] = out["seconds"] / job["steps"]
        out["frames"] = job["num_frames"]
        log(f"plain: {out['seconds']:.2f} s, peak {out['peak_bytes'] / 2**30:.2f} GiB")
        return out

    plain: dict | None = None
    runs: dict[str, dict] = {}
    for rep in range(max(1, s.repeat)):  # interleaved repeats; the fastest of each is kept (noisy shared CPUs)
        if s.repeat > 1:
            log(f"repeat {rep + 1}/{s.repeat}")
        plain = _keep_fastest(plain, plain_once())
        for name in s.presets:
            runs[name] = _keep_fastest(runs.get(name), _guided_once(name, s, model, job, device, ckpt, log))
    assert plain is not None
    # every guided run also does the whole plain sampling work: the fastest execution of that work seen
    # anywhere is the steadiest estimate of the plain cost on a shared, noisy CPU
    plain["best_seconds"] = min([plain["seconds"], *(r["sampling_seconds"] for r in runs.values())])
    for run in runs.values():
        _add_ratios(run, plain)
        log(f"{run['preset']}: {run['seconds']:.2f} s (x{run['time_ratio']:.2f}), {run['steps_guided']} steps guided, "
            f"UNet share {100 * (run['unet_share'] or 0):.0f}%")

    result = {
        "bench": "motionprompt",
        "version": __version__,
        "model": s.model,
        "device": str(device),
        "dtype": dtype,
        "machine": _machine(device),
        "job": job,
        "flow_backend": guidance_config(s.presets[0], s, ckpt.flow if ckpt else None).flow.backend,
        "discriminator": s.disc or "random cnn",
        "warmup": s.warmup,
        "repeat": s.repeat,
        "build_seconds": build_seconds,
        "memory_method": plain["memory_method"],
        "plain": plain,
        "runs": runs,
        "notes": notes,
    }
    if "paper" in runs and "fast" in runs:
        p, f = runs["paper"], runs["fast"]
        result["fast_vs_paper"] = {
            "time_ratio_fast": f["time_ratio"],
            "time_ratio_paper": p["time_ratio"],
            "time_ratio_steady_fast": f["time_ratio_steady"],
            "time_ratio_steady_paper": p["time_ratio_steady"],
            "disc_drop_kept": _ratio(f["disc_drop"], p["disc_drop"]),
            "disc_drop_total_kept": _ratio(f["disc_drop_total"], p["disc_drop_total"]),
        }
    return result


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _ratio(a, b) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def _machine(device: torch.device) -> dict:
    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ----------------------------------------------------------------------------- output
def _gib(b) -> str:
    return f"{b / 2**30:.2f}"


def format_report(r: dict) -> str:
    j = r["job"]
    lines = [
        f"MotionPrompt bench {r['version']}: model {r['model']} on {r['device']} ({r['dtype']}, "
        f"{r['machine']['torch_threads']} threads), {j['num_frames']} frames {j['width']}x{j['height']}, "
        f"{j['steps']} DDIM steps, cfg {j['cfg_scale']}, flow {r['flow_backend']}, discriminator {r['discriminator']}",
        f"memory: {r['memory_method']}",
        *[f"note: {n}" for n in r["notes"]],
        "",
        "| run | wall s | x plain | x plain (steady) | peak GiB | x plain | transient GiB | x plain | steps x iters "
        "| guidance s | UNet fwd+bwd | disc-loss drop/step | projected x plain @25 steps |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    p = r["plain"]
    lines.append(f"| plain | {p['seconds']:.2f} | 1.00 | 1.00 (best plain work {p.get('best_seconds', p['seconds']):.2f} s) "
                 f"| {_gib(p['peak_bytes'])} | 1.00 | {_gib(p['delta_bytes'])} | 1.00 | - | - | - | - | - |")
    for name, g in r["runs"].items():
        drop = "-" if g["disc_drop"] is None else f"{g['disc_drop']:.4f}"
        share = "-" if g["unet_share"] is None else f"{100 * g['unet_share']:.0f}%"
        mem = "-" if g["peak_mem_ratio"] is None else f"{g['peak_mem_ratio']:.2f}"
        dmem = "-" if g["peak_mem_delta_ratio"] is None else f"{g['peak_mem_delta_ratio']:.2f}"
        lines.append(
            f"| {name} | {g['seconds']:.2f} | {g['time_ratio']:.2f} | {g['time_ratio_steady']:.2f} | "
            f"{_gib(g['peak_bytes'])} | {mem} | "
            f"{_gib(g['delta_bytes'])} | {dmem} | {g['steps_guided']} x {g['config']['inner_iters']} | "
            f"{g['guidance_seconds']:.2f} | {share} | {drop} | {g['projected_time_ratio_at_25_steps']:.2f} |")
    names = list(r["runs"])
    lines += ["", f"one inner iteration in plain step-costs (1 step-cost = {r['plain'].get('best_seconds', 0) / j['steps']:.3f} s, "
                  "the plain sampler's [cond; uncond] step at this job):",
              "| phase | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label in PHASES:
        cells = [f"{r['runs'][n]['phase_step_costs'][key]:.3f}" if key in r["runs"][n].get("phase_step_costs", {}) else "-"
                 for n in names]
        if any(c != "-" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| **total per iteration** | " + " | ".join(
        "-" if r["runs"][n].get("iteration_step_costs") is None else f"**{r['runs'][n]['iteration_step_costs']:.2f}**"
        for n in names) + " |")
    for n in names:
        pr = r["runs"][n].get("projection")
        if pr and pr["time_ratio"] is not None:
            lines.append(
                f"projection {n} @ {pr['steps']} steps x {pr['frames']} frames: x{pr['time_ratio']:.2f} time = 1 + "
                f"{pr['guided_steps']} guided steps x {pr['iterations_per_guided_step']:.2f} it x "
                f"{pr['iteration_step_costs_at_target']:.2f} step-costs / {pr['steps']} (measured at "
                f"{pr['measured_frames']} frames; UNet fwd+bwd {pr['frame_linear_step_costs']:.2f} step-costs scale "
                f"with frames, the rest does not)")
    lines += ["", "guidance time by phase (seconds, share):", "| phase | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]
    for key, label in PHASES:
        cells = []
        for n in names:
            ph, sh = r["runs"][n]["phases"], r["runs"][n]["phase_share"]
            cells.append(f"{ph[key]:.3f} ({100 * sh.get(key, 0):.1f}%)" if key in ph else "-")
        if any(c != "-" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if "fast_vs_paper" in r:
        c = r["fast_vs_paper"]
        kept = "-" if c["disc_drop_kept"] is None else f"{100 * c['disc_drop_kept']:.0f}%"
        kept_t = "-" if c["disc_drop_total_kept"] is None else f"{100 * c['disc_drop_total_kept']:.0f}%"
        lines += ["", f"fast vs paper: time x{c['time_ratio_fast']:.2f} vs x{c['time_ratio_paper']:.2f} "
                      f"(steady x{c['time_ratio_steady_fast']:.2f} vs x{c['time_ratio_steady_paper']:.2f}); fast keeps "
                      f"{kept} of paper's disc-loss drop per guided step, {kept_t} of the total over the run"]
    return "\n".join(lines)


def add_arguments(p) -> None:
    p.add_argument("--model", default="tiny", choices=["tiny", "sd15-random"],
                   help="tiny random model (seconds) or SD1.5-sized random model (minutes on CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="model weights dtype (auto: fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--preset", nargs="+", default=["paper"], choices=sorted(PRESETS),
                   help="guided runs to compare against one plain run (e.g. --preset paper fast)")
    p.add_argument("--steps", type=int, help="sampling steps (default: 25; sd15-random on CPU: 10)")
    p.add_argument("--frames", type=int, help="frames (default 16; sd15-random on CPU: 8)")
    p.add_argument("--height", type=int, help="height (default 64; sd15-random on CUDA: 512)")
    p.add_argument("--width", type=int, help="width (default 64; sd15-random on CUDA: 512)")
    p.add_argument("--cfg", type=float, default=7.5, help="classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flow-backend", default="lk_pyramid",
                   help="flow backend for every preset (default lk_pyramid: no weights); 'preset' keeps each preset's")
    p.add_argument("--flow-size", type=int, help="override the presets' flow short side")
    p.add_argument("--flow-iters", type=int, help="override the presets' flow iterations")
    p.add_argument("--random-flow", action="store_true", help="random RAFT weights (cost measurement only)")
    p.add_argument("--flow-weights", action="append", default=[], metavar="DIR", help="folder with RAFT .pth weights")
    d = p.add_mutually_exclusive_group()
    d.add_argument("--disc", help="discriminator .safetensors (its flow backend is used)")
    d.add_argument("--random-disc", action="store_true", help="random CNN discriminator (the default)")
    p.add_argument("--repeat", type=int, default=1, help="interleaved repeats; the fastest of each run is reported")
    p.add_argument("--threads", type=int, help="torch CPU threads (on a busy shared CPU, 1 gives steadier timings)")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up runs")
    p.add_argument("--no-probe", action="store_true", help="skip the disc-loss-after-step probe")
    p.add_argument("--json-out", help="also write the JSON result to this file")
    p.add_argument("--md-out", help="also write the markdown report to this file")


def settings_from_args(args) -> BenchSettings:
    return BenchSettings(
        model=args.model, device=args.device, dtype=args.dtype, presets=list(args.preset), steps=args.steps,
        frames=args.frames, height=args.height, width=args.width, cfg_scale=args.cfg, seed=args.seed,
        flow_backend=None if args.flow_backend == "preset" else args.flow_backend, flow_size=args.flow_size,
        flow_iters=args.flow_iters, random_flow=args.random_flow, flow_weights=args.flow_weights, disc=args.disc,
        warmup=not args.no_warmup, probe=not args.no_probe, repeat=args.repeat,
        threads=args.threads,
    )


def run(args) -> dict:
    result = run_bench(settings_from_args(args), log=lambda m: print(f"  {m}", flush=True))
    report = format_report(result)
    print(report)
    if getattr(args, "md_out", None):
        from ..files.atomic import write_text

        write_text(args.md_out, report + "\n")
    if args.json_out:
        from ..files.atomic import write_json

        write_json(args.json_out, result)
    print(json.dumps(result, default=str))
    return result
