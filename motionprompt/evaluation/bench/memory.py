"""Peak memory of one bench run.

On CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only: weights +
activations). On CPU: the process's peak RSS during the run, read from ``VmHWM`` in ``/proc/self/status``
after resetting it by writing 5 to ``/proc/self/clear_refs`` (exact, kernel-tracked; weights, activations,
allocator caches, libraries); where that reset is not allowed, ``VmRSS`` sampled every 5 ms by a thread.
``delta_bytes`` is the rise above the RSS / allocation at the start of the run (the transient).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading

import torch


def _proc_status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def trim_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back so each run starts from the same RSS


class MemoryMeter:
    """Peak memory of one run; see the module doc for what is measured on CPU and CUDA."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.method = ""
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled = 0

    def __enter__(self) -> MemoryMeter:
        trim_memory()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return self
        self.start = _proc_status("VmRSS") or 0
        if _reset_hwm() and _proc_status("VmHWM") is not None:
            self.method = "VmHWM (peak RSS, reset via /proc/self/clear_refs)"
        else:
            self.method = "VmRSS sampled every 5 ms"
            self._sampled = self.start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._sampled = max(self._sampled, _proc_status("VmRSS") or 0)

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._sampled, _proc_status("VmRSS") or 0)
        else:
            self.peak = _proc_status("VmHWM") or 0

    def to_dict(self) -> dict:
        return {"start_bytes": self.start, "peak_bytes": self.peak, "delta_bytes": max(0, self.peak - self.start)}

