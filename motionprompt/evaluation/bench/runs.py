"""The runs: one plain and one guided sampling per preset (interleaved repeats, the fastest kept), the
disc-loss probe on the same pairs after each guided step, and the result dict.

The guided wall time excludes the bench's own probe. ``time_ratio_steady`` = (P + guidance time) / P, where P
is the fastest execution of the plain sampling work seen in the process (the plain run, or a guided run minus
its guidance time): on a shared CPU another process can slow one run by 2x, which the raw ratio inherits.
The disc-loss reduction per guided step is the disc loss at iteration 0 (tokens as they entered the step)
minus the disc loss with the tokens after the step's last update on the *same* pairs, latents and timestep.
"""

from __future__ import annotations

import os
import platform
import time

import torch

from ... import __version__
from ...engine import schedule
from ...engine.config import PRESETS
from .costs import add_ratios
from .memory import MemoryMeter, trim_memory
from .phases import GradientSpy, SpyHost, SpyModule, phase_times
from .settings import BenchSettings, build_model, guidance_config, run_names


def _timed_sample(host, guide, job: dict, device: torch.device, probe_times: list[float] | None = None) -> dict:
    from ...hosts.diffusers.sampler import sample

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
    from ...engine.judge import x0_pair_logits
    from ...engine.losses import disc_loss

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


def _guided_once(run_name: str, name: str, memory: str | None, s: BenchSettings, model, job: dict,
                 device: torch.device, ckpt, log) -> dict:
    from ...disc.models import build_discriminator
    from ...engine.guidance import MotionGuide
    from ...flow.registry import build_flow
    from ...hosts.diffusers.host import DiffusersVideoHost

    cfg = guidance_config(name, s, ckpt.flow if ckpt else None, memory)
    host = DiffusersVideoHost(model, s.prompt, "", cfg.n_tokens, device)
    flow = build_flow(cfg.flow, s.flow_weights, allow_random=s.random_flow).to(device)
    torch.manual_seed(s.seed)
    if ckpt is not None:
        ckpt.check_flow(cfg.flow)
        disc_model = ckpt.model
    else:
        disc_model = build_discriminator("cnn").to(device)
    spy = GradientSpy(sync=cfg.sync_timing)
    guide = MotionGuide(cfg, SpyHost(host, spy), SpyModule(flow, spy, "flow"), SpyModule(disc_model, spy, "logits"),
                        device=device)
    after: dict[int, float] = {}
    probe_times: list[float] = []
    if s.probe:
        _install_probe(guide, after, probe_times)
    run = _timed_sample(SpyHost(host, spy), guide, job, device, probe_times)
    phases, guidance = phase_times(guide, spy)
    steps_peak = [r.peak_mem_bytes for r in guide.records if r.peak_mem_bytes is not None]
    if steps_peak:  # each guided step resets CUDA's peak to measure its own: the run's peak is the larger
        run["peak_bytes"] = max(run["peak_bytes"], *steps_peak)
        run["delta_bytes"] = max(0, run["peak_bytes"] - run["start_bytes"])
    summary = guide.summary()
    done = [r for r in guide.records if r.iterations]
    first = [r.iterations[0].disc for r in done]
    last = [r.iterations[-1].disc for r in done]
    drops = [r.iterations[0].disc - after[r.step] for r in done if r.step in after]
    paths = sorted({r.memory_path for r in done})
    saved = [r.saved_bytes for r in done if r.saved_bytes]
    predicted = [r.predicted_bytes for r in done if r.predicted_bytes]
    run.update({
        "preset": name,
        "run": run_name,
        "memory_path": "/".join(paths) or None,
        "saved_bytes": saved[0] if saved else None,  # the first guided step's first iteration, per phase
        "predicted_bytes": predicted[0] if predicted else None,  # the plan's prediction above the step's start
        "step_peak_above_start": max((r.peak_mem_bytes - r.start_bytes for r in done
                                      if r.peak_mem_bytes is not None and r.start_bytes is not None), default=None),
        "config": {"inner_iters": cfg.inner_iters, "every_k": cfg.every_k, "window": [cfg.window_start, cfg.window_end],
                   "flow": cfg.flow.to_dict(), "unet_autocast": cfg.unet_autocast,
                   "memory": cfg.memory, "x0_mode": cfg.x0_mode},
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
    log(f"{run_name}: {run['seconds']:.2f} s, guidance {guidance:.2f} s, peak {run['peak_bytes'] / 2**30:.2f} GiB, "
        f"memory path {run['memory_path']}")
    del guide, flow, host
    trim_memory()
    return run


def run_bench(s: BenchSettings, log=print) -> dict:
    from ...disc.checkpoint import load_discriminator
    from ...disc.models import build_discriminator
    from ...engine.guidance import MotionGuide
    from ...flow.registry import build_flow
    from ...hosts.diffusers.host import DiffusersVideoHost

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
        from ...hosts.diffusers.sampler import sample

        sample(plain_host, None, **{**job, "steps": 2})
        warm_cfg = guidance_config(s.presets[0], s, ckpt.flow if ckpt else None)
        warm_cfg.inner_iters, warm_cfg.window_start, warm_cfg.window_end = 1, 0.0, 1.0
        warm_host = DiffusersVideoHost(model, s.prompt, "", warm_cfg.n_tokens, device)
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
        for run_name, name, memory in run_names(s):
            runs[run_name] = _keep_fastest(runs.get(run_name),
                                           _guided_once(run_name, name, memory, s, model, job, device, ckpt, log))
    assert plain is not None
    # every guided run also does the whole plain sampling work: the fastest execution of that work seen
    # anywhere is the steadiest estimate of the plain cost on a shared, noisy CPU
    plain["best_seconds"] = min([plain["seconds"], *(r["sampling_seconds"] for r in runs.values())])
    for run in runs.values():
        add_ratios(run, plain)
        log(f"{run['run']}: {run['seconds']:.2f} s (x{run['time_ratio']:.2f}), {run['steps_guided']} steps guided, "
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
    p, f = (runs.get(n) or runs.get(f"{n}:speed") for n in ("paper", "fast"))
    if p is not None and f is not None:
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
