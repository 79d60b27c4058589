"""Paired statistics of the evaluation: they must find a planted effect and must not invent one."""

import numpy as np
import pytest

from motionprompt.evaluation.flowstats import frechet_distance
from motionprompt.evaluation.paired import kept_fraction, paired_stats


def test_detects_a_planted_shift_with_the_right_sign_ci_and_win_rate():
    rng = np.random.default_rng(0)
    plain = rng.normal(0.3, 0.1, 64)
    guided = plain + 0.05 + rng.normal(0, 0.03, 64)
    s = paired_stats(plain, guided, higher_is_better=True)
    assert s["n"] == 64 and s["p_value"] < 1e-6
    assert s["ci95"][0] < 0.05 < s["ci95"][1] and s["ci95"][0] > 0
    assert s["diff_mean"] == pytest.approx(np.mean(guided - plain))
    assert s["win_rate"] > 0.9


def test_lower_is_better_flips_the_win_rate_not_the_difference():
    plain = np.array([5.0, 6.0, 7.0, 8.0])
    guided = plain - 1.0
    s = paired_stats(plain, guided, higher_is_better=False)
    assert s["diff_mean"] == -1.0 and s["win_rate"] == 1.0


def test_does_not_detect_an_effect_that_is_not_there():
    rng = np.random.default_rng(1)
    p_values = []
    for _ in range(40):
        plain = rng.normal(0, 1, 64)
        guided = plain + rng.normal(0, 0.5, 64)  # noise around zero effect
        p_values.append(paired_stats(plain, guided, resamples=999)["p_value"])
    # under the null, p < 0.01 should be rare (expected 0.4 of 40) and p-values roughly uniform
    assert sum(p < 0.01 for p in p_values) <= 2
    assert 0.3 < np.median(p_values) < 0.7


def test_identical_clips_give_no_effect_and_p_one():
    x = np.linspace(0, 1, 10)
    s = paired_stats(x, x.copy())
    assert s["diff_mean"] == 0 and s["win_rate"] == 0.5 and s["p_value"] == 1.0


def test_non_finite_pairs_are_dropped_and_counted():
    s = paired_stats([1.0, np.nan, 3.0, 4.0], [2.0, 5.0, np.inf, 5.0])
    assert s["n"] == 2 and s["dropped"] == 2 and s["diff_mean"] == 1.0


def test_kept_fraction_is_the_ratio_of_mean_gains():
    assert kept_fraction({"diff_mean": 0.02}, {"diff_mean": 0.05}) == pytest.approx(0.4)
    assert kept_fraction({"diff_mean": 0.02}, {"diff_mean": 0.0}) is None


def test_frechet_distance_is_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, (400, 4))
    b = rng.normal(0, 1, (400, 4))
    same = frechet_distance(a, b)
    shifted = frechet_distance(a, b + np.array([1.0, 0, 0, 0]))
    assert same < 0.15 and shifted == pytest.approx(1.0 + same, abs=0.2)
    # exact for known Gaussians: means differ by m, covariances I and 4I -> |m|^2 + d (1 + 4 - 2*2)
    assert frechet_distance(np.zeros(3), np.ones(3), np.eye(3), 4 * np.eye(3), moments=True) == pytest.approx(3 + 3)


def test_a_change_without_a_better_side_has_no_win_rate_but_its_relative_size():
    """The object's travel (``displacement``): shorter is not worse in itself, so no win rate; the report shows how
    much it changed against plain, and the distance from the prompted travel is ``speed_error``'s job."""
    from motionprompt.evaluation.measures import METRICS

    plain = [10.0, 12.0, 14.0, 16.0]
    s = paired_stats(plain, [0.95 * x for x in plain], higher_is_better=None)
    assert s["win_rate"] is None and s["relative"] == pytest.approx(-0.05) and s["p_value"] is not None
    assert METRICS["displacement"] is None and METRICS["speed_error"] is False
