"""One args object for the generation feature: UI values, API dicts, infotext and XYZ overrides.

Pure Python on purpose (no ``modules``, no gradio): the UI builds its controls from ``FIELDS``, the
script turns whatever the host hands it (positional UI values, one API dict, XYZ overrides) into a
``MotionPromptArgs``, and that object alone produces the engine config and the infotext.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from ...engine.config import MEMORY_MODES, PRESETS, GuidanceConfig, preset
from ...flow.policy import resolve_flow
from ...flow.settings import FlowSettings

INFOTEXT_KEY = "MotionPrompt"
XYZ_ATTR = "motionprompt_xyz"  # where an XYZ cell leaves its overrides on ``p`` for ``with_overrides``
RESULT_KEY = "MotionPrompt result"
TOKEN_LEVELS = ("auto", "input", "output")
#: per-sample: the paper's inner loop on every guided step; amortized: a token file (``token-train``) appended at
#: every step, no inner loop, no discriminator; hybrid: the inner loop, starting from the token file
MODES = ("per-sample", "amortized", "hybrid")
FLOW_AUTO = "from discriminator"  # the UI's way of saying "the backend the discriminator was trained on"
#: presets the WebUI offers; low_vram there is K=2 and the low-memory path (UNet and VAE decoder checkpointed,
#: ``engine.memory_plan``); its fp16 autocast is not applied (the WebUI samples in its own precision) and, as for
#: every preset, the discriminator's flow settings win over its small flow
WEBUI_PRESETS = ("paper", "fast", "low_vram")
#: settings the engine has but the WebUI does not offer, with the reason an API caller gets
NOT_IN_WEBUI = {
    "unet_autocast": "the WebUI samples in its own precision (--no-half / --precision); MotionPrompt follows it",
    "grad_checkpointing": "replaced by 'memory' (auto, speed, balanced, low): balanced checkpoints the UNet",
}
#: engine settings a preset decides; an explicit value equal to the preset's is not an override
PRESET_FIELDS = ("n_tokens", "init_word", "inner_iters", "lr", "optimizer", "window_start", "window_end", "every_k",
                 "pairs", "gap_min", "gap_max", "lambda_disc", "lambda_tv", "lambda_drift", "disc_loss", "x0_mode",
                 "cond_after", "memory")


@dataclass
class MotionPromptArgs:
    """The one rule for "preset vs explicit values" (UI, API, infotext paste and XYZ alike): a value in
    ``PRESET_FIELDS`` that equals what the preset gives is *not* an override (stored as None, follows the
    preset); a value that differs is an override and wins over any preset, including one an XYZ axis sets.
    The UI always sends every advanced value, so this is what lets a Preset axis change them."""

    enabled: bool = False
    discriminator: str = ""  # file name inside the MotionPrompt models folder (or an absolute path)
    preset: str = "paper"
    # engine settings; None = take the preset's value
    n_tokens: int | None = None
    init_word: str | None = None
    inner_iters: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    window_start: float | None = None
    window_end: float | None = None
    every_k: int | None = None
    pairs: int | None = None
    gap_min: int | None = None
    gap_max: int | None = None
    lambda_disc: float | None = None
    lambda_tv: float | None = None
    lambda_drift: float | None = None
    disc_loss: str | None = None
    x0_mode: str | None = None
    cond_after: str | None = None
    flow_backend: str | None = None  # None = the backend the discriminator was trained on
    flow_size: int | None = None  # None = the discriminator's own
    flow_iters: int | None = None  # None = the discriminator's own
    seed: int = -1  # frame-pair sampler seed; -1 = the generation's seed
    token_level: str = "auto"  # "input" (through CLIP, as textual inversion), "output", or auto-fallback
    mode: str = "per-sample"  # MODES
    token: str = ""  # amortized/hybrid: token file name in the WebUI's embeddings folder (or an absolute path)
    memory: str | None = None  # auto | speed | balanced | low (engine.memory_plan); None = the preset's (auto)

    # ------------------------------------------------------------------ construction
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: dict) -> MotionPromptArgs:
        """API/infotext dict -> args. Unknown keys are an error: a typo must not silently do nothing."""
        names = set(cls.field_names())
        aliases = {"enable": "enabled", "model": "discriminator", "disc": "discriminator"}
        clean = {}
        for key, value in data.items():
            key = aliases.get(key, key)
            if key in NOT_IN_WEBUI:
                raise ValueError(f"MotionPrompt argument {key!r}: {NOT_IN_WEBUI[key]}")
            if key not in names:
                raise ValueError(f"unknown MotionPrompt argument {key!r}; known: {sorted(names)}")
            clean[key] = value
        return cls(**clean).coerced()

    @classmethod
    def from_script_args(cls, args: tuple | list) -> MotionPromptArgs:
        """What ``Script.process(p, *args)`` receives: UI values in ``FIELDS`` order, or one API dict.

        The API copies its list into the first slots and leaves the UI defaults in the rest, so a
        dict in the first slot is the whole request.
        """
        if not args:
            return cls()
        if isinstance(args[0], dict):
            return cls.from_dict(args[0])
        if isinstance(args[0], MotionPromptArgs):
            return dataclasses.replace(args[0])
        names = cls.field_names()
        if len(args) > len(names):
            raise ValueError(f"MotionPrompt got {len(args)} positional values, expected at most {len(names)}")
        return cls(**dict(zip(names, args, strict=False))).coerced()

    def with_overrides(self, overrides: dict | None) -> MotionPromptArgs:
        """XYZ-plot overrides (written onto ``p`` by the axis apply functions) win over UI values. A Preset
        axis moves every value that followed the UI's preset; explicit values stay."""
        if not overrides:
            return self
        return dataclasses.replace(self, **overrides).coerced()

    def coerced(self) -> MotionPromptArgs:
        """Gradio hands numbers back as floats and dropdowns as strings; API users send anything."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or (value == "" and f.name not in ("discriminator", "init_word", "token")):
                setattr(self, f.name, None if f.default is None else f.default)
                continue
            kind = _kind(f)
            try:
                if kind is bool:
                    value = value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")
                elif kind is int:
                    value = round(float(value))
                elif kind is float:
                    value = float(value)
                else:
                    value = str(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"MotionPrompt argument {f.name}={value!r}: {exc}") from exc
            setattr(self, f.name, value)
        if not self.flow_size:  # 0 = auto in the UI
            self.flow_size = None
        if not self.flow_iters:
            self.flow_iters = None
        if self.flow_backend == FLOW_AUTO:
            self.flow_backend = None
        if self.preset not in WEBUI_PRESETS:
            raise ValueError(f"unknown MotionPrompt preset {self.preset!r}; choose from {list(WEBUI_PRESETS)}")
        if self.memory is not None and self.memory not in MEMORY_MODES:
            raise ValueError(f"MotionPrompt memory must be one of {list(MEMORY_MODES)}, got {self.memory!r}")
        if self.token_level not in TOKEN_LEVELS:
            raise ValueError(f"token_level must be one of {TOKEN_LEVELS}")
        self.mode = {"per_sample": "per-sample", "persample": "per-sample"}.get(self.mode.lower(), self.mode.lower())
        if self.mode not in MODES:
            raise ValueError(f"unknown MotionPrompt mode {self.mode!r}; choose from {list(MODES)}")
        if self.mode != "per-sample":  # a token file holds input embeddings: only the input level can carry it
            if self.token_level == "output":
                raise ValueError(f"mode {self.mode} needs input-level tokens (a token file holds text-encoder input "
                                 "embeddings); set the token level to auto or input")
            self.token_level = "input"
        implied = self.preset_values(self.preset)
        for name in PRESET_FIELDS:
            if getattr(self, name) == implied[name]:
                setattr(self, name, None)
        return self

    # ------------------------------------------------------------------ engine config
    def engine_config(self, generation_seed: int, disc_flow: FlowSettings | None) -> tuple[GuidanceConfig, list[str]]:
        """Preset + explicit values; flow by the engine's policy (``flow_policy.resolve_flow``). Returns the
        config and the notes a user-requested flow mismatch produces."""
        overrides = {name: getattr(self, name) for name in PRESET_FIELDS if getattr(self, name) is not None}
        overrides["seed"] = generation_seed if self.seed < 0 else self.seed
        cfg = preset(self.preset, **overrides)
        if self.mode == "hybrid":  # tokens start from the file (and n_tokens is the file's)
            from ...amortized.token_file import with_start_token
            from .embeddings import resolve_token

            if not self.token:
                raise ValueError("hybrid mode needs a token file (python -m motionprompt token-train, then put it "
                                 "in the WebUI's embeddings folder)")
            with_start_token(cfg, resolve_token(self.token))
        choice = resolve_flow(disc_flow, cfg.flow, self.flow_backend, self.flow_size, self.flow_iters)
        cfg.flow = choice.settings
        cfg.unet_autocast = "none"  # see NOT_IN_WEBUI
        return cfg.validate(), choice.notes

    # ------------------------------------------------------------------ infotext
    def to_infotext(self) -> str:
        """``key: value, ...``: discriminator, preset and the explicit values only (short, like adetailer), and
        only what the mode uses (``applies``). Pasting it back expands it with ``paste_values``."""
        defaults = MotionPromptArgs()
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "enabled" or value is None or not self.applies(f.name):
                continue
            if f.name == "discriminator" and not value:  # none picked (its paste: ui._paste_file)
                continue
            if f.name in ("discriminator", "preset") or value != getattr(defaults, f.name):
                parts.append(f"{f.name}: {_format(value)}")
        return ", ".join(parts)

    def applies(self, name: str) -> bool:
        """Whether a field does anything in this mode. Amortized has no inner loop: no preset, no engine settings,
        no pair seed, no token level; a discriminator (and its flow) only measures the clip."""
        if self.mode != "amortized" or name in ("mode", "token", "discriminator"):
            return True
        if name in ("flow_backend", "flow_size", "flow_iters"):
            return bool(self.discriminator)
        return name not in ("preset", "seed", "token_level", *PRESET_FIELDS)

    @staticmethod
    def preset_values(name: str) -> dict:
        """The value every field in ``PRESET_FIELDS`` takes under a preset."""
        cfg = GuidanceConfig.from_dict(PRESETS[name])
        return {k: v for k, v in cfg.to_dict().items() if k in PRESET_FIELDS}

    @classmethod
    def ui_values(cls, name: str) -> dict:
        """Every advanced control's value under a preset (what the Preset radio writes into them)."""
        return {**cls.preset_values(name), "flow_backend": FLOW_AUTO, "flow_size": 0, "flow_iters": 0, "seed": -1,
                "token_level": "auto"}

    @classmethod
    def parse_infotext(cls, text: str) -> dict:
        """Inverse of ``to_infotext``: a dict of field -> string, unknown fields dropped."""
        names = set(cls.field_names())
        out = {}
        for item in text.split(", "):
            key, sep, value = item.partition(": ")
            if sep and key.strip() in names:
                out[key.strip()] = value.strip()
        return out

    @classmethod
    def paste_values(cls, text: str) -> dict:
        """What a pasted infotext puts into *every* control: the preset's values, then the listed ones. A
        field left as it was would otherwise become an explicit override of the pasted preset."""
        listed = cls.parse_infotext(text)
        name = listed.get("preset", "paper")
        base = cls.ui_values(name if name in WEBUI_PRESETS else "paper")
        base.update(mode="per-sample", token="")  # a paste without them is a per-sample run
        return {**{k: str(v) for k, v in base.items()}, **listed}


def _kind(f) -> type:
    text = str(f.type)
    for name, kind in (("bool", bool), ("int", int), ("float", float)):
        if text.startswith(name):
            return kind
    return str


def _format(value) -> str:
    """Commas and ': ' would break the ``key: value, ...`` list; file names may contain them."""
    return str(value).replace(",", " ").replace(": ", " ")
