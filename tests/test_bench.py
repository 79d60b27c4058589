"""The benchmark on the tiny model: plain and guided in one process, ratios from its own timings."""

import json

import numpy as np
import pytest
import torch

from motionprompt.evaluation.bench import PHASES, MemoryMeter


def test_memory_meter_sees_a_transient_allocation():
    with MemoryMeter(torch.device("cpu")) as meter:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        del block
    m = meter.to_dict()
    assert meter.method
    assert m["peak_bytes"] >= m["start_bytes"] > 0
    assert m["delta_bytes"] >= 48 * 2**20  # the sampling fallback may miss a little of it, VmHWM does not


@pytest.mark.diffusers
def test_bench_tiny_plain_vs_guided(capsys, tmp_path):
    from motionprompt.cli.main import main

    argv = ["bench", "--model", "tiny", "--steps", "4", "--frames", "4", "--preset", "paper", "fast",
            "--flow-size", "64", "--flow-iters", "2", "--threads", "1", "--md-out", str(tmp_path / "bench.md")]
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])  # the last line is the JSON result
    assert any(line.startswith("| paper |") for line in out) and any("| phase |" in line for line in out)

    plain, paper, fast = result["plain"], result["runs"]["paper"], result["runs"]["fast"]
    assert result["job"] == {"steps": 4, "num_frames": 4, "height": 64, "width": 64, "cfg_scale": 7.5, "seed": 0}
    assert plain["seconds"] > 0 and plain["peak_bytes"] > 0
    for run in (paper, fast):
        assert run["time_ratio"] == pytest.approx(run["seconds"] / plain["seconds"])
        assert run["peak_mem_ratio"] == pytest.approx(run["peak_bytes"] / plain["peak_bytes"])
        assert 0 < run["guidance_seconds"] < run["seconds"] + run["probe_seconds"]
        assert run["disabled"] is None and run["nonfinite_iterations"] == 0

    # really guided: the paper window is steps 1-2 of 4 with K=3; fast guides every other step once
    assert (paper["steps_guided"], paper["iterations"]) == (2, 6)
    assert (fast["steps_guided"], fast["iterations"]) == (1, 1)

    # the phase breakdown accounts for the guidance time; the backward is split by gradient arrival
    phases = paper["phases"]
    assert set(phases) <= {k for k, _ in PHASES}
    assert paper["backward_split"] and "unet_backward" in phases and "backward_unsplit" not in phases
    timed = sum(v for k, v in phases.items() if k != "untimed")
    assert all(v >= 0 for v in phases.values())
    assert timed == pytest.approx(paper["guidance_seconds"] - phases["untimed"])
    assert phases["untimed"] < 0.2 * paper["guidance_seconds"]
    assert sum(paper["phase_share"].values()) == pytest.approx(1.0)
    assert paper["unet_share"] == pytest.approx(
        (phases["unet_forward"] + phases["unet_backward"]) / paper["guidance_seconds"])
    # flow: no checkpoint, so the explicit --flow-size/--flow-iters and the bench's backend apply to every
    # preset alike (flow_policy), and the result says which flow ran
    assert paper["config"]["flow"] == fast["config"]["flow"] == {"backend": "lk_pyramid", "size": 64, "iters": 2}
    assert result["flow_backend"] == "lk_pyramid"

    # the disc-loss reduction is measured on the same pairs before and after each guided step
    assert paper["disc_drop"] is not None and fast["disc_drop"] is not None
    assert paper["disc_drop_total"] == pytest.approx(2 * paper["disc_drop"])
    assert result["fast_vs_paper"]["disc_drop_kept"] == pytest.approx(fast["disc_drop"] / paper["disc_drop"])

    # step-costs: one inner iteration (and each phase) in units of the best plain step, and the projection to
    # 25 steps x 16 frames built from the printed inputs (UNet phases scale with frames, the rest does not)
    step = plain["best_seconds"] / 4
    for run in (paper, fast):
        assert run["step_cost_seconds"] == pytest.approx(step)
        assert run["iteration_step_costs"] == pytest.approx(run["guidance_seconds"] / run["iterations"] / step)
        assert sum(run["phase_step_costs"].values()) == pytest.approx(run["iteration_step_costs"])
        pr = run["projection"]
        unet = run["phase_step_costs"]["unet_forward"] + run["phase_step_costs"]["unet_backward"]
        assert pr["frame_linear_step_costs"] == pytest.approx(unet)
        assert pr["iteration_step_costs_at_target"] == pytest.approx(unet + (run["iteration_step_costs"] - unet) / 4)
        assert pr["time_ratio"] == pytest.approx(
            1 + run["guided_steps_at_25"] * pr["iterations_per_guided_step"] * pr["iteration_step_costs_at_target"] / 25)
    md = (tmp_path / "bench.md").read_text(encoding="utf-8")
    assert "| **total per iteration** |" in md and "projection paper @ 25 steps x 16 frames" in md
