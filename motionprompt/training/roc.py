"""Binary classification numbers for the discriminator (no sklearn in a WebUI venv)."""

from __future__ import annotations

import math

import numpy as np


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative), ties 1/2.

    Mann-Whitney form with average ranks for ties; NaN when one class is missing.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.shape} vs {y.shape}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average rank over each run of tied scores
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_metrics(logits, labels, sources=None, source_names=None) -> dict:
    """Accuracy at p = 0.5, ROC AUC, BCE, per-class accuracy and the share judged fake per fake source."""
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel() > 0.5
    if len(z) == 0:
        return {}
    pred = z > 0
    bce = np.mean(np.logaddexp(0.0, -z) * y + np.logaddexp(0.0, z) * ~y)
    out = {
        "acc": float((pred == y).mean()),
        "auc": roc_auc(z, y),
        "loss": float(bce),
        "real_acc": float(pred[y].mean()) if y.any() else math.nan,
        "fake_acc": float((~pred[~y]).mean()) if (~y).any() else math.nan,
        "mean_p_real": float(np.mean(1 / (1 + np.exp(-z[y])))) if y.any() else math.nan,
        "mean_p_fake": float(np.mean(1 / (1 + np.exp(-z[~y])))) if (~y).any() else math.nan,
    }
    if sources is not None and source_names is not None:
        src = np.asarray(sources).ravel()
        out["detected"] = {
            name: float((~pred[(src == i) & ~y]).mean()) for i, name in enumerate(source_names) if ((src == i) & ~y).any()
        }
    return out
