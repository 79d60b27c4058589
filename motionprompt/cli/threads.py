"""``--threads`` of the sampling commands: torch's CPU thread count, with a default that suits the model's size.

torch starts one thread per core. On a small or shared machine that is the worst choice: a parallel region
waits for its slowest thread, and a thread whose core is busy with another job stalls all of them. Measured on
a shared 2-core x86-64 machine (load 2-3 from other jobs): one plain toy clip (25 DDIM steps, 16 frames 32²)
1.5 s with 1 thread, 1.3-41 s with 2 (issue 26: 5.7 s against 77 s for a guided one); 4 plain steps of an
SD1.5-sized random model (8 frames 64²) 16-29 s with 1 thread, 19-52 s with 2. The default is therefore 1
thread for the toy and tiny models, whose operations are too small to split, and min(4, cores - 1) for real
models, whose large matrix products do split: one core is left to the rest of the machine (the WebUI, another
job), and 4 is a cap against oversubscribing a shared server, not measured here (a 2-core machine cannot; ask
for more with --threads). ``OMP_NUM_THREADS`` set in the environment replaces the default (torch follows it);
``--threads`` wins over both.
"""

from __future__ import annotations

import argparse
import os

#: the commands that sample (bench and toy-train have their own --threads, default torch's)
SAMPLING_COMMANDS = ("generate", "demo", "evaluate", "toy-check", "toy-disc", "toy-results", "token-train")
SMALL_MODELS = ("toy", "tiny")
BIG_MODEL_THREADS = 4
HELP = ("torch CPU threads (default: 1 for the toy and tiny models, whose steps are too small to split and crawl "
        "when a thread waits for a busy core: 1.5 s against up to 41 s per toy clip with 2 threads on a shared "
        "2-core machine; min(4, cores - 1) for real models, leaving a core to the rest of the machine; "
        "OMP_NUM_THREADS, when set, replaces the default)")


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_positive, default=None, metavar="N", help=HELP)


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def small_model(model: str | None) -> bool:
    """The toy model (shipped, or any toy .safetensors) and the tiny random test model."""
    return model is None or model in SMALL_MODELS or str(model).endswith(".safetensors")


def default_threads(model: str | None = None) -> int | None:
    """The thread count a sampling command uses without ``--threads``; None: torch's own (OMP_NUM_THREADS set)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return 1 if small_model(model) else max(1, min(BIG_MODEL_THREADS, usable_cores() - 1))


def apply_threads(threads: int | None, model: str | None = None) -> int:
    """Set torch's CPU threads: ``threads`` when given (> 0), else the default for ``model``; returns the count."""
    import torch

    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    n = threads if threads is not None else default_threads(model)
    if n is not None and n != torch.get_num_threads():
        torch.set_num_threads(n)
    return torch.get_num_threads()


def model_of(args) -> str | None:
    """The model a parsed sampling command runs (the random-model demo samples the tiny model)."""
    if getattr(args, "random_model", False):
        return "tiny"
    return getattr(args, "model", None)
