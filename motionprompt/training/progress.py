"""Discriminator training's progress on a terminal (``train``, ``toy-disc``): the ``progress(step, total, metrics,
eta_seconds)`` callback of ``training.trainer``."""

from __future__ import annotations

import sys
import time

from ..engine.records import num


class ProgressPrinter:
    """tqdm bars when tqdm is installed (it is in a WebUI venv), else a text line every few seconds."""

    def __init__(self, every_s: float = 2.0, stream=None):
        self.every_s = every_s
        self.stream = stream or sys.stderr
        self._bar = None
        self._phase = None
        self._last = 0.0
        try:
            import tqdm  # noqa: F401

            self._tqdm = True
        except ImportError:
            self._tqdm = False

    @staticmethod
    def describe(metrics: dict) -> str:
        if metrics.get("phase") == "flow":
            return f"{metrics.get('role', '')} {metrics.get('clip', '')}"
        parts = [f"loss {metrics['loss']:.4f}"] if metrics.get("loss") is not None else []
        if metrics.get("val_acc") is not None:
            parts.append(f"val acc {num(metrics['val_acc'])} auc {num(metrics.get('val_auc'))} @ {metrics['val_step']}")
        return ", ".join(parts)

    def __call__(self, step: int, total: int, metrics: dict, eta) -> None:
        phase = metrics.get("phase", "")
        if self._tqdm:
            from tqdm import tqdm

            if phase != self._phase:
                self.close()
                self._bar = tqdm(total=total, desc=phase, file=self.stream, dynamic_ncols=True)
                self._bar.update(step - 1)
                self._phase = phase
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix_str(self.describe(metrics), refresh=False)
            if step >= total:
                self.close()
            return
        now = time.monotonic()
        if phase != self._phase or step >= total or now - self._last >= self.every_s:
            self._phase, self._last = phase, now
            eta_s = f", eta {eta:.0f} s" if eta is not None else ""
            print(f"[{phase}] {step}/{total}{eta_s}  {self.describe(metrics)}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._phase = None
