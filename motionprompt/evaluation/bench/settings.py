"""The bench job (model, device, size), the model it samples and each preset's guidance config."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from ...engine.config import GuidanceConfig, preset
from ...flow.policy import resolve_flow
from ...flow.settings import FlowSettings

_log = logging.getLogger("motionprompt")

DEFAULT_JOBS = {  # (model, device) -> steps, frames, height, width
    ("tiny", "cpu"): (25, 16, 64, 64),
    ("tiny", "cuda"): (25, 16, 64, 64),
    ("sd15-random", "cpu"): (10, 8, 64, 64),
    ("sd15-random", "cuda"): (25, 16, 512, 512),
}


@dataclass
class BenchSettings:
    model: str = "tiny"  # tiny | sd15-random
    device: str = "cpu"
    dtype: str = "auto"  # auto = fp16 on CUDA, fp32 on CPU
    presets: list[str] = field(default_factory=lambda: ["paper"])
    memory: list[str] = field(default_factory=list)  # memory paths to run each preset on; empty: the preset's own
    steps: int | None = None  # None: DEFAULT_JOBS for (model, device)
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    cfg_scale: float = 7.5
    seed: int = 0
    prompt: str = "a white fox running on a rock, snow"
    flow_backend: str | None = "lk_pyramid"  # None: the preset's (or the checkpoint's) backend
    flow_size: int | None = None
    flow_iters: int | None = None
    random_flow: bool = False
    flow_weights: list[str] = field(default_factory=list)
    disc: str | None = None  # checkpoint path; None = random CNN discriminator
    warmup: bool = True
    probe: bool = True
    repeat: int = 1  # interleaved repeats of every run; the fastest is reported
    threads: int | None = None  # torch CPU threads (None: torch's default)

    def job(self) -> dict:
        dev = "cuda" if self.device.startswith("cuda") else "cpu"
        steps, frames, height, width = DEFAULT_JOBS.get((self.model, dev), DEFAULT_JOBS[("tiny", "cpu")])
        return {"steps": self.steps or steps, "num_frames": self.frames or frames, "height": self.height or height,
                "width": self.width or width, "cfg_scale": self.cfg_scale, "seed": self.seed}


def build_model(name: str, device: torch.device, dtype: str = "auto"):
    from ...hosts.diffusers.models import sd15_random_model, tiny_model

    if name == "tiny":
        model = tiny_model(seed=0)
    elif name == "sd15-random":
        model = sd15_random_model(seed=0)
    else:
        raise ValueError(f"unknown bench model {name!r}; choose tiny or sd15-random")
    if dtype == "auto":
        dtype = "fp16" if device.type == "cuda" else "fp32"
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    for m in (model.unet, model.vae, model.text_encoder):
        m.to(device)
        if m.dtype != torch_dtype:
            m.to(torch_dtype)
    return model, dtype


def run_names(s: BenchSettings) -> list[tuple[str, str, str | None]]:
    """(run name, preset, memory path or None) for every guided run: ``paper`` or, with --memory, ``paper:low``."""
    if not s.memory:
        return [(name, name, None) for name in s.presets]
    return [(f"{name}:{mem}", name, mem) for name in s.presets for mem in s.memory]


def guidance_config(name: str, s: BenchSettings, disc_flow=None, memory: str | None = None) -> GuidanceConfig:
    cfg = preset(name)
    if memory:
        cfg.memory = memory
    # the engine's flow policy: a checkpoint's flow wins; --flow-backend only picks the flow when there is
    # no checkpoint (a random D); --flow-size/--flow-iters are explicit requests (a note if they differ from D)
    fallback = FlowSettings(s.flow_backend or cfg.flow.backend, cfg.flow.size, cfg.flow.iters)
    choice = resolve_flow(disc_flow, fallback, None, s.flow_size, s.flow_iters)
    cfg.flow = choice.settings
    for note in choice.notes:
        _log.warning("bench: %s", note)
    cfg.sync_timing = s.device.startswith("cuda")
    return cfg.validate()

