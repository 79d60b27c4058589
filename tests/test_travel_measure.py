"""The object's travel in `evaluate`: a clip whose object goes less far than its caption says reads, through the
world's ground truth, the paired statistics and both report formats, as a negative travel change (in %) and a larger
speed error, with no win rate for the travel (shorter is not worse in itself) and the usual one for speed_error."""

import numpy as np
import pytest

from motionprompt.evaluation.evaluate import format_summary, summarize
from motionprompt.hosts.diffusers.sources import world
from motionprompt.toy.results import _cell
from motionprompt.toy.world import LEVELS, caption, render, with_caption

SHORTER = 12 / 15  # the slowed clip reaches frame 12's position on its last frame: 80 % of the travel


def _clips():
    """(caption, seed, frames as captioned, the same frames slowed to 80 % of the travel) for six toy scenes."""
    out = []
    idx = np.floor(np.arange(16) * SHORTER + 1e-9).astype(int)  # 0, 0, 1, 2, 3, 4, 4, ..., 12: a slower object
    for seed, (direction, speed) in enumerate([("left", "quickly"), ("right", "slowly"), ("up", "quickly"),
                                               ("down", "slowly"), ("right", "quickly"), ("left", "slowly")]):
        scene = with_caption(LEVELS["toy"], 40 + seed, colour="red", shape="square", direction=direction, speed=speed)
        frames = render(scene, 32)
        out.append((caption(scene), seed, frames, frames[idx]))
    return out


def _row(arm, prompt, seed, metrics):
    return {"arm": arm, "prompt": prompt, "seed": seed, "metrics": metrics, "seconds": 1.0,
            "guide": {"token_drift": 0.0, "disabled": None}}


def test_a_clip_that_travels_less_reads_as_a_negative_travel_change_and_a_larger_speed_error(tmp_path):
    toy = world("toy")
    rows = []
    for cap, seed, frames, slowed in _clips():
        plain, slow = toy.truth(frames, cap), toy.truth(slowed, cap)
        assert slow["displacement"] == pytest.approx(SHORTER * plain["displacement"], rel=0.08)
        assert slow["speed_error"] > plain["speed_error"] + 0.1 and slow["direction_ok"]
        rows += [_row("plain", cap, seed, plain), _row("slow", cap, seed, slow)]

    summary = summarize(rows, ["slow"])
    travel, speed = summary["arms"]["slow"]["metrics"]["displacement"], summary["arms"]["slow"]["metrics"]["speed_error"]
    assert travel["n"] == 6 and travel["diff_mean"] < 0 and travel["relative"] == pytest.approx(SHORTER - 1, abs=0.05)
    assert travel["win_rate"] is None and travel["p_value"] < 0.05  # all six shorter: Wilcoxon's smallest p at n=6
    assert speed["diff_mean"] > 0.1 and speed["win_rate"] == 0.0  # lower is better: the slowed clip loses every pair

    # evaluate's text report: the travel line with its change in %, no win rate; speed_error with its win rate
    text = format_summary(summary)
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("displacement"))
    assert line.rstrip().endswith("(-20.0%)") and line.split()[-3] == "-"  # win column "-", then p, then change
    speed_line = next(ln for ln in text.splitlines() if ln.strip().startswith("speed_error"))
    assert speed_line.split()[-2] == "0.00"  # win rate 0: the slowed clip is farther from the prompted speed in all

    # the HTML report's row: the change with its %, no win rate
    from motionprompt.evaluation.report import write_report

    page = write_report(tmp_path, summary, []).read_text()
    row = next(r for r in page.split("<tr>") if r.startswith("<td>displacement</td>"))
    assert "(-20.0%)</td>" in row and "<td>-</td>" in row

    # the toy table's cells: the change with its % and p, no win rate; speed error with its win rate
    cell = _cell(travel)
    assert cell.startswith("-") and f"({travel['relative']:+.1%})" in cell and "win" not in cell and " p " in cell
    assert "win 0.00" in _cell(speed)


def test_a_clip_that_keeps_its_travel_reads_as_no_change():
    toy = world("toy")
    rows = []
    for cap, seed, frames, _ in _clips():
        t = toy.truth(frames, cap)
        rows += [_row("plain", cap, seed, t), _row("same", cap, seed, dict(t))]
    travel = summarize(rows, ["same"])["arms"]["same"]["metrics"]["displacement"]
    assert travel["diff_mean"] == 0 and travel["relative"] == 0
