"""The torch.distributed seam: the trainer's one contact with process groups.

``torchrun`` (or any launcher that sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT)
starts N copies of the same command, and they meet in ``joined``. Without those variables (a plain
``python -m motionprompt train``, the WebUI tab) ``Group()`` is a world of one whose collectives
return their input unchanged, so the single-process run goes through the same lines and never
touches torch.distributed.

NCCL reduces CUDA tensors and gloo CPU ones, so ``Group.device`` says where collective buffers live;
the trainer only hands over CPU tensors and Python numbers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import torch

# A barrier waits for the slowest rank's share of flow extraction, which can take long on CPU; a rank
# that dies closes its sockets and fails the others long before this.
TIMEOUT = timedelta(hours=2)


def world_size_from_env() -> int:
    """Processes the launcher started (1 without a launcher); known before any process group exists."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError as exc:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from exc


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # collective buffers

    @property
    def main(self) -> bool:
        """The one process that writes the run's files and reports progress."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64, so counts stay exact)."""
        if self.world == 1:
            return [float(v) for v in values]
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.cpu().tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one: ranks stop together or would wait for each other forever."""
        return self.sum([1.0 if flag else 0.0])[0] > 0

    def share(self, n: int, rank: int | None = None) -> range:
        """A rank's contiguous part of ``n`` items; sizes differ by at most one, lower ranks take the extra."""
        rank = self.rank if rank is None else rank
        base, extra = divmod(n, self.world)
        start = rank * base + min(rank, extra)
        return range(start, start + base + (rank < extra))

    def gather(self, part: torch.Tensor, n: int) -> torch.Tensor:
        """Every rank's ``share(n)`` rows concatenated in rank order, on every rank (CPU)."""
        if self.world == 1:
            return part
        import torch.distributed as dist

        sizes = [len(self.share(n, r)) for r in range(self.world)]
        if len(part) != sizes[self.rank]:
            raise ValueError(f"rank {self.rank} holds {len(part)} rows, its share of {n} is {sizes[self.rank]}")
        padded = torch.zeros((max(sizes), *part.shape[1:]), dtype=part.dtype, device=self.device)
        padded[: len(part)] = part.to(self.device)
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)  # all_gather wants equal shapes: pad, then trim
        return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]).cpu()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP over the group (it averages gradients in backward); the model itself in a world of one."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


@contextmanager
def joined(device: str) -> Iterator[tuple[Group, str]]:
    """Join the launcher's process group, if there is one; yields (group, this process's training device).

    A CUDA device becomes ``cuda:LOCAL_RANK`` (one GPU per process, NCCL); anything else trains on that
    device and talks over gloo. A group this call created is destroyed when the block ends, one that
    the caller had already initialised is left alone.
    """
    world = world_size_from_env()
    if world == 1:
        yield Group(), device
        return
    import torch.distributed as dist

    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing and not dist.is_initialized():
        raise ValueError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: start the processes with torchrun")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    comm = torch.device(device) if dist.get_backend() == "nccl" else torch.device("cpu")
    try:
        yield Group(dist.get_rank(), dist.get_world_size(), local, comm), device
    finally:
        if created:
            dist.destroy_process_group()
