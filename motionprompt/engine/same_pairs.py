"""Did a guided step raise the discriminator's score? Measured on the same frame pairs before and after.

The iteration records score fresh random pairs each time, so their first->last change mixes what the
tokens did with pair-to-pair variation (and with one inner iteration first and last are the same
number). This observer re-scores, after each optimized step, the pairs of that step's first
iteration with the optimized tokens: "before" is the first iteration's own score (tokens entering
the step), "after" is the same pairs with the tokens leaving it.
"""

from __future__ import annotations

import torch

from .judge import x0_pair_logits


def score_pairs(guide, predict, cond: torch.Tensor, pairs: list) -> float:
    """Mean p(real) of the discriminator on ``pairs`` of the x0 predicted with ``cond`` (no grad)."""
    with torch.no_grad():
        return float(torch.sigmoid(x0_pair_logits(guide, predict(cond), pairs)).mean())


class SamePairsProbe:
    """``guide.observers.append(SamePairsProbe(guide))``; ``rows`` holds one dict per optimized step."""

    def __init__(self, guide):
        self.guide = guide
        self.rows: list[dict] = []
        self.error: str | None = None

    def __call__(self, step: int, predict) -> None:
        rec = self.guide.records[-1] if self.guide.records else None
        cond = self.guide._cond_opt
        if rec is None or rec.step != step or not rec.iterations or cond is None:
            return
        first = rec.iterations[0]
        if first.skipped:
            return
        pairs = [tuple(p) for p in first.pairs]
        try:
            after = score_pairs(self.guide, predict, cond, pairs)
        except Exception as exc:  # a measurement must not switch guidance off
            self.error = f"{type(exc).__name__}: {exc}"
            return
        self.rows.append({"step": step, "pairs": [list(p) for p in pairs], "before": first.d_score, "after": after})

    def change(self) -> tuple[float, float] | None:
        """Mean (before, after) over the optimized steps, or None when no step was measured."""
        if not self.rows:
            return None
        n = len(self.rows)
        return sum(r["before"] for r in self.rows) / n, sum(r["after"] for r in self.rows) / n
