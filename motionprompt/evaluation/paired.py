"""Paired statistics for "guided vs plain from the same seed": effect, uncertainty, a paired test.

Every comparison is per sample (same prompt, same seed, same initial noise), so the unit of analysis is
the difference ``guided - plain``. Reported: mean difference with a 95 % bootstrap CI (BCa, scipy), win
rate (share of pairs where guided is better, ties counting half), and the Wilcoxon signed-rank test's
two-sided p-value (scipy), which assumes nothing about the differences' distribution but symmetry.
"""

from __future__ import annotations

import math

import numpy as np


def paired_stats(plain, guided, higher_is_better: bool | None = True, seed: int = 0, resamples: int = 9999) -> dict:
    from scipy import stats

    a = np.asarray(plain, dtype=np.float64)
    b = np.asarray(guided, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two 1-D arrays of equal length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = len(a)
    out = {"n": int(n), "dropped": int((~keep).sum()), "plain_mean": _f(a.mean()) if n else None,
           "guided_mean": _f(b.mean()) if n else None, "diff_mean": None, "ci95": None, "relative": None,
           "win_rate": None, "p_value": None, "higher_is_better": higher_is_better}
    if n == 0:
        return out
    d = b - a
    out["diff_mean"] = _f(d.mean())
    out["relative"] = _f(d.mean() / abs(a.mean())) if a.mean() != 0 else None
    if higher_is_better is not None:  # None: a change with no better side (no win rate)
        better = d if higher_is_better else -d
        out["win_rate"] = _f(((better > 0).sum() + 0.5 * (better == 0).sum()) / n)
    if n >= 3 and np.ptp(d) > 0:
        ci = stats.bootstrap((d,), np.mean, confidence_level=0.95, n_resamples=resamples, method="BCa",
                             random_state=np.random.default_rng(seed)).confidence_interval
        out["ci95"] = [_f(ci.low), _f(ci.high)]
    elif n >= 1:
        out["ci95"] = [_f(d.mean()), _f(d.mean())]
    if n >= 2 and np.any(d != 0):
        out["p_value"] = _f(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    elif n >= 2:
        out["p_value"] = 1.0
    return out


def kept_fraction(effect: dict, reference: dict) -> float | None:
    """How much of a reference effect (e.g. the paper preset's) another setting keeps: ratio of mean gains."""
    e, r = effect.get("diff_mean"), reference.get("diff_mean")
    if e is None or r is None or r == 0:
        return None
    return _f(e / r)


def _f(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None
