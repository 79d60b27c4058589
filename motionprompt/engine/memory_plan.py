"""Which memory path a guided step takes, and what it is predicted to need.

Three paths, fastest first (``docs/memory.md`` has the GPU figures):
* ``speed`` — nothing recomputed;
* ``balanced`` — every UNet resnet, attention and motion module checkpointed (``checkpointing``);
* ``low`` — the same, and the VAE decoder's resnets and attention checkpointed, pair frames decoded one
  at a time, so one decoder block's activations exist at once.

``auto`` takes the fastest path whose predicted peak fits the free device memory with a margin; where none
fits, guidance stops for the rest of the job before any work is spent (the video finishes unguided and says
why). The prediction scales the bytes kept for the backward per frame-pixel (``COEFFS``: measured with
``saved_bytes`` on the SD1.5-sized model, ``bench --memory-accounting``) by this job's frames run with
gradients, latent size and element size; each guided step's first iteration measures what it kept, and the
ratio of that to the table's figure for what ran scales this job's later predictions
(``guidance.MotionGuide._learn``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import MEMORY_MODES

PATHS = MEMORY_MODES[1:]  # speed, balanced, low: fastest first

#: bytes kept for the backward per byte of element size: per frame run with gradients and latent pixel (``unet``)
#: and per decoded frame and latent pixel (``decode``), SD1.5 UNet + AnimateDiff v2 motion modules and the SD VAE,
#: measured on the CPU with ``python -m motionprompt bench --model sd15-random --memory-accounting`` (fp32, 2 frames
#: at 128² and 192², a · pixels + b fitted through both). ``work``: the backward's working set above what is kept,
#: per frame and latent pixel, which only a GPU shows: the H200's step peak minus the kept bytes at 16 x 512² fp16
#: (``make bench-gpu``). docs/memory.md compares prediction and measurement.
COEFFS = {
    "speed": {"unet": 159100.0, "decode": 364040.0, "work": 6390.0},
    "balanced": {"unet": 12580.0, "decode": 364040.0, "work": 5816.0},
    "low": {"unet": 12580.0, "decode": 109576.0, "work": 4669.0},
}
MARGIN = 0.10  # of the free memory, kept free
MARGIN_BYTES = 512 * 2**20  # and at least this much (allocator fragmentation, the host's own buffers)


@dataclass
class JobShape:
    """What the activations of one inner iteration scale with."""

    grad_frames: int  # frames the UNet runs with gradients (the scored frames' context windows)
    latent_pixels: int  # h * w of the latents
    decoded_frames: int  # distinct frames decoded per iteration (<= 2 * pairs)
    element_size: int  # bytes per element of the UNet's activations (2: fp16, 4: fp32)


@dataclass
class Plan:
    path: str
    predicted: dict[str, int]  # path -> predicted peak bytes above what is allocated now
    free: int | None  # free device memory when chosen (None: unknown, e.g. CPU)
    why: str = ""
    shape: JobShape | None = None
    measured: dict[str, int] = field(default_factory=dict)  # saved bytes per phase, first iteration

    def text(self) -> str:
        pred = self.predicted.get(self.path)
        parts = [f"memory path {self.path}"]
        if pred:
            parts.append(f"predicted {pred / 2**30:.2f} GiB")
        if self.why:
            parts.append(self.why)
        return ", ".join(parts)


def predict(shape: JobShape, kept_only: bool = False) -> dict[str, int]:
    """Predicted bytes above the resident weights and latents for each path (``kept_only``: without the
    backward's working set, what ``saved_bytes`` measures)."""
    out = {}
    for path in PATHS:
        c = COEFFS[path]
        unet = c["unet"] * shape.grad_frames * shape.latent_pixels * shape.element_size
        decode = c["decode"] * shape.decoded_frames * shape.latent_pixels * shape.element_size
        work = 0 if kept_only else c["work"] * shape.grad_frames * shape.latent_pixels * shape.element_size
        out[path] = int(unet + decode + work)
    return out


def free_bytes(device: torch.device) -> int | None:
    """Free memory for the inner loop: the driver's free memory plus what torch's cache holds unused."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def choose(mode: str, shape: JobShape | None, free: int | None, floor: int = 0, scale: float | None = None) -> Plan:
    """The path for ``mode``; ``auto`` picks the fastest that fits, not above ``PATHS[floor]`` (after an
    out-of-memory). ``scale``: measured / predicted bytes of this job so far. Raises ``MemoryError`` with the
    reason when nothing fits (the caller runs the step unguided)."""
    if mode not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {MEMORY_MODES}, got {mode!r}")
    predicted = predict(shape) if shape is not None else {}
    if scale:
        predicted = {k: int(v * scale) for k, v in predicted.items()}
    if mode != "auto":
        return Plan(mode, predicted, free, "asked for", shape=shape)
    paths = PATHS[floor:]
    why = f"auto, after an out-of-memory on the {PATHS[floor - 1]} path" if floor else "auto"
    if free is None or not predicted:
        return Plan(paths[0], predicted, free, f"{why}: free memory unknown (not a CUDA device)" if free is None
                    else f"{why}: no prediction for this host", shape=shape)
    budget = free - max(MARGIN * free, MARGIN_BYTES)
    for path in paths:
        if predicted[path] <= budget:
            return Plan(path, predicted, free, f"{why}: fits {free / 2**30:.1f} GiB free", shape=shape)
    raise MemoryError(f"not even the low-memory path fits: it needs about {predicted['low'] / 2**30:.1f} GiB "
                      f"and {free / 2**30:.1f} GiB are free; use fewer frames or a smaller size")
