"""One long job of the MotionPrompt tab at a time, in a worker thread, streamed to the page.

A section's button handler is a generator: it starts the job in a daemon thread holding the section's slot and
yields what the page shows every second until the thread ends (no JavaScript: gradio 3.41 and 4.40 alike). The
worker, not the page, frees the slot, so closing the browser tab never lets a second run start beside the first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator


class Slot:
    """A section's one running job: the lock a second click fails to take, and the job its Interrupt reaches."""

    def __init__(self):
        self.lock = threading.Lock()
        self.job = None


def stream(slot: Slot, job, work: Callable[[], None], view: Callable[[], tuple], busy: tuple, name: str,
           before: Callable[[], None] | None = None) -> Iterator[tuple]:
    """Run ``work`` in a thread as ``slot``'s job, yielding ``view()`` each second and once at the end; ``busy``
    (once) when another job holds the slot. ``before`` runs once the slot is taken, before the thread starts."""
    if not slot.lock.acquire(blocking=False):  # a second click must not start a second worker or un-stop the first
        yield busy
        return

    def body() -> None:
        try:
            work()
        finally:
            slot.job = None
            slot.lock.release()

    slot.job = job
    if before is not None:
        before()
    thread = threading.Thread(target=body, name=name, daemon=True)
    try:
        thread.start()
    except RuntimeError:
        slot.job = None
        slot.lock.release()
        raise
    while thread.is_alive():
        thread.join(timeout=1.0)
        yield view()
    yield view()
