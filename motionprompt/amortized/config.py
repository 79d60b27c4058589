"""What a token-train run learns and from what: settings, fingerprint for resume, the one error type."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from ..engine.config import MEMORY_MODES, GuidanceConfig, preset
from . import token_file

#: amortized defaults that differ from the per-sample paper preset [ours]: a persistent optimizer over hundreds
#: of updates needs a far smaller step than three fresh Adam steps on one clip
TOKEN_DEFAULTS = {"lr": 1e-3}


class TokenTrainError(ValueError):
    """A run that cannot start or resume; the message says what to do."""


@dataclass
class TokenTrainConfig:
    disc: str  # guiding discriminator .safetensors (its flow settings are used)
    out: str = "outputs/token"  # folder: state, log, exported token
    name: str = "motionprompt"  # the exported embedding's name: the word that triggers it in a WebUI prompt
    model: str = "toy"  # "toy", a toy model .safetensors, "tiny" (random), an SD1.5 single file or a diffusers folder
    model_id: str = ""  # what else identifies the model, for resume (the WebUI tab: its checkpoint and motion module)
    motion_adapter: str = ""  # a motion module file or MotionAdapter folder, for an SD1.5 checkpoint file or folder
    model_config: str = ""  # SD1.5's diffusers configs folder for a single-file ``model`` ("": a local HF cache's)
    prompts: str = ""  # text file, one prompt a line; "" = the toy world's guiding-split captions
    val_prompts: str = ""  # text file of held-out prompts; "" = a spread-out part of the training prompts
    val_fraction: float = 0.15  # held out of the prompts when no val_prompts file is given
    seeds: int = 4  # sampling seeds per training prompt
    val_seeds: int = 2  # per held-out prompt
    val_steps: int = 3  # guided steps per held-out (prompt, seed) scored, spread over the window
    val_pairs: int = 4  # evenly spaced frame pairs per validation x0
    sampling_steps: int = 25
    cfg_scale: float = 5.0
    frames: int = 16  # tiny/diffusers models (a toy model has its own)
    size: int = 64  # frame side, tiny/diffusers models (a toy model has its own)
    guidance: dict = field(default_factory=dict)  # GuidanceConfig overrides of the paper preset (+ TOKEN_DEFAULTS)
    flow_iters: int = 0  # flow refinement iterations; 0 = the discriminator's own (its backend and size always)
    steps: int = 300  # optimizer updates in all (a resumed run continues up to this)
    batch: int = 4  # (prompt, seed, step) triples per update
    refresh_every: int = 0  # rebuild the z_t cache with the current token every N updates; 0 = plain latents only
    val_every: int = 25
    save_every: int = 25
    seed: int = 0  # batches and frame pairs
    #: weight of (log speed - log speed of the prompt alone)^2 over each triple's scored pairs (engine.losses.speed_loss):
    #: keeps the prompted speed; 0 = off (a token trained for D alone shortened the toy object's travel by ~4 %)
    lambda_speed: float = 0.0
    seed_base: int = -1  # sampling seeds from here on (validation's 1,000,000 further); -1: the model's world's
    cache_batch: int = 8  # clips per batched sampler call (cache building)
    flow_weights: list[str] = field(default_factory=list)
    allow_download: bool = False
    device: str = "cpu"
    #: what an update keeps for the backward: "speed" everything; "balanced" recomputes the UNet's blocks, "low" the
    #: VAE decoder's too (the per-sample mode's memory paths, engine.memory_plan); same result to float rounding
    memory: str = "speed"

    #: may differ between a run and its resumption
    _RESUMABLE = ("out", "name", "steps", "val_every", "save_every", "device", "flow_weights", "allow_download",
                  "memory")

    def guidance_config(self) -> GuidanceConfig:
        settings = {**TOKEN_DEFAULTS, **self.guidance}
        if settings.get("start_token") and "n_tokens" not in settings:
            settings["n_tokens"] = token_file.token_count(settings["start_token"])
        return preset("paper", **settings)

    def validate(self) -> TokenTrainConfig:
        token_file.check_name(self.name)
        checks = [
            (self.seeds >= 1 and self.val_seeds >= 1, "need at least one seed per prompt"),
            (self.steps >= 1 and self.batch >= 1, "need steps >= 1 and batch >= 1"),
            (self.val_every >= 1 and self.save_every >= 1, "val_every and save_every must be >= 1"),
            (self.refresh_every >= 0, "refresh_every must be >= 0"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (self.val_steps >= 1 and self.val_pairs >= 1, "need val_steps >= 1 and val_pairs >= 1"),
            (self.sampling_steps >= 2, "need at least 2 sampling steps"),
            (self.cache_batch >= 1, "cache_batch must be >= 1"),
            (self.memory in MEMORY_MODES[1:], "memory must be speed, balanced or low"),  # the paths, not "auto"
            (self.lambda_speed >= 0, "lambda_speed must be >= 0"),
            ("flow" not in self.guidance, "the flow follows the discriminator; only flow_iters may be set"),
        ]
        for ok, msg in checks:
            if not ok:
                raise TokenTrainError(msg)
        try:
            gcfg = self.guidance_config()
        except ValueError as exc:
            raise TokenTrainError(f"guidance settings: {exc}") from exc
        from ..engine import schedule

        if not schedule.guided_steps(gcfg, self.sampling_steps):
            raise TokenTrainError(f"no guided step in the window {gcfg.window_start}-{gcfg.window_end} of "
                                  f"{self.sampling_steps} steps")
        return self

    def fingerprint(self) -> dict:
        d = dataclasses.asdict(self)
        for k in self._RESUMABLE:
            d.pop(k, None)
        for k in ("prompts", "val_prompts"):
            d[k] = os.path.abspath(d[k]) if d[k] else ""
        if os.path.exists(self.model):  # a file or folder; a registered name ("toy", "tiny") stays as it is
            d["model"] = os.path.abspath(self.model)
        d["disc"] = os.path.abspath(self.disc) if self.disc else ""
        d["motion_adapter"] = os.path.abspath(self.motion_adapter) if self.motion_adapter else ""
        if self.model_config:  # absent when unset, so runs saved before the field existed still resume
            d["model_config"] = os.path.abspath(self.model_config)
        else:
            d.pop("model_config")
        d["guidance"] = self.guidance_config().to_dict()
        return json.loads(json.dumps(d, sort_keys=True, default=str))
