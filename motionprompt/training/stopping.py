"""Stopping a long command cleanly: Ctrl-C / SIGTERM or a time budget ask the loop to stop after the current step,
so the command saves resumable state instead of dying mid-write."""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator


class StopRequest:
    """``stop()`` is true once a stop was asked for; ``reason`` says which: "SIGINT", "SIGTERM", "--max-minutes"."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.reason: str | None = None

    def __call__(self) -> bool:
        if self.reason is None and time.monotonic() > self.deadline:
            self.reason = "--max-minutes"
        return self.reason is not None


@contextlib.contextmanager
def stop_requests(max_minutes: float = 0, when: str = "at the end of this step") -> Iterator[Callable[[], bool]]:
    """Yields ``stop()`` (a ``StopRequest``): true after SIGINT/SIGTERM or ``max_minutes`` (0 = no limit). Handlers
    are restored on exit; outside the main thread (e.g. a WebUI worker) only the time budget applies."""
    stop = StopRequest(time.monotonic() + max_minutes * 60 if max_minutes else math.inf)

    def on_signal(signum, frame):
        name = signal.Signals(signum).name
        stop.reason = stop.reason or name
        print(f"\n{name}: saving {when}", file=sys.stderr, flush=True)

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, on_signal)
    try:
        yield stop
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
