"""Engine settings: one dataclass that every host (WebUI, diffusers, CLI) fills in.

Where the paper fixes a value it is the default; where it is silent (see README, "Choices where the
paper is silent") the default is ours and is marked ``[ours]`` below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..flow.settings import FlowSettings

DISC_LOSS_FORMS = ("saturating", "non_saturating")
COND_BEFORE = ("original", "init_tokens")
COND_AFTER = ("original", "optimized")
X0_MODES = ("cond", "cfg")
OPTIMIZERS = ("adam", "nsgd")
AUTOCAST = ("none", "fp16", "bf16")
MEMORY_MODES = ("auto", "speed", "balanced", "low")  # auto, then the paths fastest first (memory_plan)


@dataclass
class GuidanceConfig:
    # learnable tokens
    n_tokens: int = 1  # paper default
    init_word: str = "authentic"  # paper
    # an exported token file (``amortized.token_file``) to start from instead of init_word: the amortized token.
    # Its vectors become T0 (the drift term anchors to them) and it is part of the prompt outside the window.
    start_token: str = ""
    # optimizer
    inner_iters: int = 3  # paper K; 0 = no inner loop (only with a start token: the amortized token as it is)
    lr: float = 1e-2  # [ours] (MinorityPrompt default)
    optimizer: str = "adam"  # fresh optimizer every guided step; "nsgd" = step of lr*|T0| along -g/|g|
    grad_clip: float = 0.0  # max grad norm; 0 disables [ours]
    # schedule: guided steps are those with start*N <= i < end*N (i = 0 is the initial noise)
    window_start: float = 0.16  # paper 3 < i < 15 of 25 -> 4/25
    window_end: float = 0.60  # 15/25, exclusive
    every_k: int = 1
    cond_before: str = "original"  # paper silent [ours]
    cond_after: str = "original"  # paper: original prompt restored after the window
    # frames and pairs
    pairs: int = 1  # frame pairs per inner iteration (paper figure: one)
    gap_min: int = 1
    gap_max: int = 4  # [ours]
    seed: int = 0
    # loss
    lambda_disc: float = 1.0
    lambda_tv: float = 0.1  # [ours]; TV in normalized units, see losses.flow_tv
    lambda_drift: float = 0.1  # [ours]; squared L2 summed over the token vectors
    disc_loss: str = "saturating"  # paper: log(1 - D)
    x0_mode: str = "cond"  # paper eq.: eps(z_t, t, c) -> conditional branch only; "cfg" = guided x0
    # flow
    flow: FlowSettings = field(default_factory=FlowSettings)
    # memory / speed
    unet_autocast: str = "none"
    # which memory path the inner loop takes (``memory_plan``): auto = the fastest whose predicted peak fits
    memory: str = "auto"
    sync_timing: bool = False  # cuda.synchronize around phases so the record's breakdown is exact

    def validate(self) -> GuidanceConfig:
        checks = [
            (self.n_tokens >= 1, "n_tokens must be >= 1"),
            (self.inner_iters >= 0, "inner_iters must be >= 0 (0: no inner loop, the start token as it is)"),
            (self.lr > 0, "lr must be > 0"),
            (0.0 <= self.window_start <= self.window_end <= 1.0, "need 0 <= window_start <= window_end <= 1"),
            (self.every_k >= 1, "every_k must be >= 1"),
            (self.pairs >= 1, "pairs must be >= 1"),
            (1 <= self.gap_min <= self.gap_max, "need 1 <= gap_min <= gap_max"),
            (self.grad_clip >= 0, "grad_clip must be >= 0"),
            (min(self.lambda_disc, self.lambda_tv, self.lambda_drift) >= 0, "loss weights must be >= 0"),
            (self.disc_loss in DISC_LOSS_FORMS, f"disc_loss must be one of {DISC_LOSS_FORMS}"),
            (self.cond_before in COND_BEFORE, f"cond_before must be one of {COND_BEFORE}"),
            (self.cond_after in COND_AFTER, f"cond_after must be one of {COND_AFTER}"),
            (self.x0_mode in X0_MODES, f"x0_mode must be one of {X0_MODES}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (self.unet_autocast in AUTOCAST, f"unet_autocast must be one of {AUTOCAST}"),
            (self.memory in MEMORY_MODES, f"memory must be one of {MEMORY_MODES}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.flow.validate()
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GuidanceConfig:
        data = dict(data)
        if "grad_checkpointing" in data:  # before the memory paths: checkpointing on was the balanced path
            legacy = data.pop("grad_checkpointing")
            data.setdefault("memory", "balanced" if legacy in (True, "True", "true", 1) else "auto")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown guidance settings: {sorted(unknown)}")
        flow = data.pop("flow", None)
        cfg = cls(**data)
        if isinstance(flow, dict):
            cfg.flow = FlowSettings(**flow)
        elif isinstance(flow, FlowSettings):
            cfg.flow = flow
        return cfg.validate()


PRESETS: dict[str, dict] = {
    # the paper's setting as far as it is known (K=3 on steps 4-14 of 25)
    "paper": {},
    # one iteration on every other guided step, cheaper flow
    "fast": {"inner_iters": 1, "every_k": 2, "flow": {"backend": "raft_small", "size": 128, "iters": 6}},
    # fewer iterations, half-precision UNet, the low-memory path (UNet and decoder checkpointed), small flow
    "low_vram": {
        "inner_iters": 2,
        "unet_autocast": "fp16",
        "memory": "low",
        "flow": {"backend": "raft_small", "size": 128, "iters": 8},
    },
}


def preset(name: str, **overrides) -> GuidanceConfig:
    """A config from a named preset plus explicit overrides (overrides win)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    data = {**PRESETS[name], **overrides}
    return GuidanceConfig.from_dict(data)
