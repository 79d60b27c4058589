"""Bytes an inner iteration keeps for its backward, per phase, measured the same way on any device.

A GPU's ``max_memory_allocated`` only exists on a GPU and a CPU's RSS mixes in allocator caches; what
decides whether guidance fits is what autograd keeps alive between the forward and the backward. So every
tensor autograd saves is seen through ``torch.autograd.graph.saved_tensors_hooks`` and its storage counted
once, in the phase that was running when it was saved (``text``, ``unet``, ``decode``, ``flow``, ``disc``).
What checkpointing keeps instead (the inputs of each wrapped call), and what a host's own saved-tensor hook
keeps (Forge's copies), arrive through ``observe``.

Not counted: leaves (weights, whether trainable or frozen, and the sampler's latents: resident anyway; also
intermediates that need no gradient, such as the first spatial transformer's input: about 40 MB at 16 x 512²).
Storages are told apart by address, and an address counts again once the tensor first seen there is gone (a
branch the loss does not use is freed during the forward and its memory reused).
Also kept: the largest single storage per phase (the backward's working set is of that order).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch

PHASES = ("text", "unet", "decode", "flow", "disc")
_ACTIVE: list[SavedBytes] = []


def observe(t, copy: bool = False) -> None:
    """Count ``t`` as kept for the backward, when an accountant is active (a no-op otherwise). ``copy``: a copy a
    saved-tensor hook made (a leaf, as hooks run without grad), counted all the same."""
    if _ACTIVE and isinstance(t, torch.Tensor):
        _ACTIVE[-1]._count(t, copy)


class SavedBytes:
    def __init__(self):
        self.bytes: dict[str, int] = {}
        self.largest: dict[str, int] = {}
        self.phase = "other"
        self._seen: dict[tuple, weakref.ref] = {}  # storage address -> the tensor first counted there

    # ------------------------------------------------------------------ measuring
    def _count(self, t: torch.Tensor, copy: bool = False) -> None:
        if not isinstance(t, torch.Tensor) or (t.is_leaf and not copy) or t.device.type == "meta":
            return
        try:
            storage = t.untyped_storage()
            key = (t.device.type, t.device.index, storage.data_ptr())
            size = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # a tensor subclass without storage: its own size
            key, size = (id(t),), t.numel() * t.element_size()
        seen = self._seen.get(key)
        if seen is not None and seen() is not None:  # that storage is still alive: a view of it, counted
            return
        self._seen[key] = weakref.ref(t)
        self.bytes[self.phase] = self.bytes.get(self.phase, 0) + size
        self.largest[self.phase] = max(self.largest.get(self.phase, 0), size)

    def _pack(self, t: torch.Tensor):
        self._count(t)
        return t

    @staticmethod
    def _unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    @contextlib.contextmanager
    def active(self) -> Iterator[SavedBytes]:
        """Count while the ``with`` block runs (a forward); ``phase`` names where the time is spent."""
        _ACTIVE.append(self)
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
                yield self
        finally:
            _ACTIVE.remove(self)

    @contextlib.contextmanager
    def in_phase(self, name: str) -> Iterator[None]:
        previous, self.phase = self.phase, name
        try:
            yield
        finally:
            self.phase = previous

    # ------------------------------------------------------------------ reading
    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    def to_dict(self) -> dict:
        return {"bytes": dict(self.bytes), "largest": dict(self.largest), "total": self.total}
