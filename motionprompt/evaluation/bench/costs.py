"""Ratios of a guided run to the plain one, and guidance in plain step-costs with the projection to
25 steps x 16 frames."""

from __future__ import annotations


def add_ratios(run: dict, plain: dict) -> None:
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
