"""The bench result as markdown tables: runs, one inner iteration in step-costs, phases."""

from __future__ import annotations

from .phases import PHASES


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
    lines += ["", "memory of the inner loop (GiB; kept = bytes one iteration keeps for its backward, counted by "
                  "engine.saved_bytes; predicted = the memory plan's, above the step's start; step peak = measured "
                  "above the step's start, CUDA only):",
              "| run | path | kept: UNet | decode | all | predicted | step peak | run peak |", "|---|---|---|---|---|---|---|---|"]
    for n in names:
        g = r["runs"][n]
        kept = (g.get("saved_bytes") or {}).get("bytes", {})
        cells = [_gib(kept[k]) if k in kept else "-" for k in ("unet", "decode")]
        total = _gib(sum(kept.values())) if kept else "-"
        pred = _gib(g["predicted_bytes"]) if g.get("predicted_bytes") else "-"
        step = _gib(g["step_peak_above_start"]) if g.get("step_peak_above_start") is not None else "-"
        lines.append(f"| {n} | {g.get('memory_path') or '-'} | {cells[0]} | {cells[1]} | {total} | {pred} | {step} | "
                     f"{_gib(g['peak_bytes'])} |")
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
