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


@contextlib.contextmanager
def stop_requests(max_minutes: float = 0, when: str = "at the end of this step") -> Iterator[Callable[[], bool]]:
    """Yields ``stop()``: true after SIGINT/SIGTERM or ``max_minutes`` (0 = no limit). Handlers are restored on
    exit; outside the main thread (e.g. a WebUI worker) only the time budget applies."""
    asked: list[str] = []
    deadline = time.monotonic() + max_minutes * 60 if max_minutes else math.inf

    def on_signal(signum, frame):
        asked.append(signal.Signals(signum).name)
        print(f"\n{asked[-1]}: saving {when}", file=sys.stderr, flush=True)

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, on_signal)
    try:
        yield lambda: bool(asked) or time.monotonic() > deadline
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
