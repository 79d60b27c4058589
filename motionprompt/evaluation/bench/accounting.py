"""``bench --memory-accounting``: the bytes one inner iteration keeps for its backward, per phase and memory
path, measured with ``engine.saved_bytes`` (the same on a CPU and a GPU), and extrapolated to a job.

Each path runs one real inner iteration (text encoder -> UNet on every frame -> x0 -> decode the pair frames
-> flow -> D -> gradient on the tokens) at two latent sizes; per phase, bytes = a · frames · pixels + b · frames
(the text conditioning's keys and values grow with frames only) is fitted through both and scaled to the
target frames, pixels and element size. On CUDA the measured peak above the start of the iteration is printed
beside the prediction, which is what ``docs/memory.md`` compares.
"""

from __future__ import annotations

import time

import torch

from ...engine import memory_plan
from ...engine.config import GuidanceConfig
from ...engine.guidance import MotionGuide
from ...flow.settings import FlowSettings

GiB = 2**30


def _one_iteration(model, path: str, frames: int, side: int, device, flow, disc, prompt: str) -> dict:
    from ...hosts.diffusers.host import DiffusersVideoHost

    cfg = GuidanceConfig(inner_iters=1, window_start=0.0, window_end=1.0, memory=path, flow=flow.settings,
                         gap_min=1, gap_max=1).validate()
    host = DiffusersVideoHost(model, prompt, "", 1, device)
    guide = MotionGuide(cfg, host, flow, disc, device=device)
    scale = model.latent_scale
    torch.manual_seed(0)
    latents = torch.randn(1, model.unet.config.in_channels, frames, side // scale, side // scale, device=device)
    model.scheduler.set_timesteps(25)
    t = model.scheduler.timesteps[5]
    predict = host.predictor(latents, t, 7.5, cfg.x0_mode)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    guide._optimize(1, 25, predict)
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    rec = guide.records[-1]
    out = {"path": path, "frames": frames, "side": side, "latent_pixels": (side // scale) ** 2,
           "decoded": len({f for p in rec.iterations[0].pairs for f in p}), "seconds": seconds,
           "saved": rec.saved_bytes.get("bytes", {}),
           "largest": rec.saved_bytes.get("largest", {})}
    if cuda:
        out["peak_above_start"] = int(torch.cuda.max_memory_allocated(device) - start)
    return out


def _fit(small: dict, large: dict, key: str) -> tuple[float, float]:
    """bytes = a * pixels + b through the two runs (same frames, two latent sizes)."""
    p1, p2 = small["latent_pixels"], large["latent_pixels"]
    y1, y2 = small["saved"].get(key, 0), large["saved"].get(key, 0)
    a = (y2 - y1) / (p2 - p1)
    return a, y1 - a * p1


#: how each phase grows: with frames x pixels (the UNet over every frame), with pixels (the decoder over the two
#: pair frames), or not at all (text encoder; flow and D run at the flow's fixed working size)
GROWTH = {"unet": "frames", "decode": "pixels", "text": "none", "flow": "none", "disc": "none"}


def memory_accounting(model, device, element_size: int, frames: int, sides: tuple[int, int],
                      target: tuple[int, int, int], prompt: str, log=print) -> dict:
    """Per path: saved bytes per phase at ``sides`` and the extrapolation to ``target`` (frames, side, element
    size). Also the per-frame-pixel coefficients ``memory_plan.COEFFS`` holds."""
    from ...disc.models import build_discriminator
    from ...flow.registry import build_flow

    flow = build_flow(FlowSettings("lk_pyramid", 128, 4), allow_random=True).to(device)
    torch.manual_seed(0)
    disc = build_discriminator("cnn").to(device)
    t_frames, t_side, t_elem = target
    t_pixels = (t_side // model.latent_scale) ** 2
    result: dict = {"element_size": element_size, "frames": frames, "sides": list(sides),
                    "target": {"frames": t_frames, "side": t_side, "element_size": t_elem}, "paths": {}}
    for path in memory_plan.PATHS:
        runs = [_one_iteration(model, path, frames, side, device, flow, disc, prompt) for side in sides]
        small, large = runs
        per_phase = {}
        for key in sorted(set(small["saved"]) | set(large["saved"])):
            a, b = _fit(small, large, key)
            growth = GROWTH.get(key, "none")
            if growth == "none":
                value = large["saved"].get(key, 0)
            else:
                value = a * t_pixels + b
                if growth == "frames":
                    value *= t_frames / frames
            per_phase[key] = max(0.0, value * t_elem / element_size)
        pixels = large["latent_pixels"]
        coeff = {"unet": _fit(small, large, "unet")[0] / frames / element_size,
                 "decode": _fit(small, large, "decode")[0] / large["decoded"] / element_size,
                 # not memory_plan's "work" (that one is a GPU's peak minus what is kept): the largest single storage
                 "largest": max(large["largest"].values() or [0]) / frames / pixels / element_size}
        result["paths"][path] = {"runs": runs, "predicted": per_phase, "predicted_total": sum(per_phase.values()),
                                 "coeff": coeff}
        log(f"{path}: " + ", ".join(f"{k} {v / GiB:.2f}" for k, v in per_phase.items())
            + f" GiB at {t_frames}x{t_side}² ({sum(per_phase.values()) / GiB:.2f} GiB kept for the backward)"
            + (f"; measured peak above start at {large['side']}²: {large['peak_above_start'] / GiB:.2f} GiB"
               if "peak_above_start" in large else ""))
    return result
