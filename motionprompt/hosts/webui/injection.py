"""Our conditioning in the CFG callback, cooperating with AnimateDiff in either callback order.

AnimateDiff keeps its own copy of ``text_cond`` (built at step 0 from the callback's, through its prompt
travel) and writes it back into the callback every step, so whoever writes last wins. We therefore write
both copies. At step 0, if AnimateDiff runs after us it has not built its copy yet and will build it from
``params.text_cond``: it gets the rows before its interpolation there. What the UNet would have had
without us is kept, so a failure or the end of a batch gives the host its own conditioning back. Used by
the guided runs (``run.GuidedRun``) and the amortized token (``amortized.AmortizedRun``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import animatediff


class CondInjection:
    def __init__(self):
        self.original: torch.Tensor | None = None
        self.active = False

    def put(self, params, cond: torch.Tensor, rows: torch.Tensor | Callable[[], torch.Tensor] | None = None,
            first: bool = False) -> None:
        """``cond``: per-frame rows (after prompt travel); ``rows``: the same before it, or a function making
        them (asked for only at step 0 when AnimateDiff runs after us)."""
        ad = animatediff.state()
        current = params.text_cond
        ad_after_us = ad is not None and first and current is not ad.text_cond
        if not self.active:
            if ad_after_us:
                self.original = ad.multi_cond(current)
            elif ad is not None and ad.text_cond is not None:
                self.original = ad.text_cond
            else:
                self.original = current
        if tuple(cond.shape) != tuple(self.original.shape):
            raise RuntimeError(f"our conditioning {tuple(cond.shape)} does not match the host's "
                               f"{tuple(self.original.shape)}")
        cond = cond.to(current.dtype)
        if ad_after_us:
            if rows is None:
                raise RuntimeError("AnimateDiff builds its rows after us at step 0: the rows before prompt travel "
                                   "are needed")
            params.text_cond = (rows() if callable(rows) else rows).to(current.dtype)
        else:
            params.text_cond = cond
        if ad is not None:
            ad.text_cond = cond
        self.active = True

    def restore(self, params) -> None:
        """The host's own conditioning back in both copies (``params`` None: AnimateDiff's copy only)."""
        if not self.active:
            return
        ad = animatediff.state()
        if ad is not None:
            ad.text_cond = self.original
        if params is not None:
            params.text_cond = self.original
        self.active = False
