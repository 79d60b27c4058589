"""One args object for the generation feature: UI values, API dicts, infotext and XYZ overrides.

Pure Python on purpose (no ``modules``, no gradio): the UI builds its controls from ``FIELDS``, the
script turns whatever the host hands it (positional UI values, one API dict, XYZ overrides) into a
``MotionPromptArgs``, and that object alone produces the engine config and the infotext.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from ..config import PRESETS, FlowSettings, GuidanceConfig, preset

INFOTEXT_KEY = "MotionPrompt"
RESULT_KEY = "MotionPrompt result"
TOKEN_LEVELS = ("auto", "input", "output")
FLOW_AUTO = "from discriminator"  # the UI's way of saying "the backend the discriminator was trained on"


@dataclass
class MotionPromptArgs:
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
    flow_size: int | None = None
    flow_iters: int | None = None
    grad_checkpointing: bool | None = None
    seed: int = -1  # frame-pair sampler seed; -1 = the generation's seed
    token_level: str = "auto"  # "input" (through CLIP, as textual inversion), "output", or auto-fallback

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
        """XYZ-plot overrides (written onto ``p`` by the axis apply functions) win over UI values."""
        if not overrides:
            return self
        return dataclasses.replace(self, **overrides).coerced()

    def coerced(self) -> MotionPromptArgs:
        """Gradio hands numbers back as floats and dropdowns as strings; API users send anything."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or (value == "" and f.name not in ("discriminator", "init_word")):
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
        if self.preset not in PRESETS:
            raise ValueError(f"unknown MotionPrompt preset {self.preset!r}; choose from {sorted(PRESETS)}")
        if self.token_level not in TOKEN_LEVELS:
            raise ValueError(f"token_level must be one of {TOKEN_LEVELS}")
        return self

    # ------------------------------------------------------------------ engine config
    def engine_config(self, generation_seed: int, disc_flow: FlowSettings | None) -> GuidanceConfig:
        """Preset + explicit values. Flow defaults to the discriminator's own (they must agree)."""
        overrides = {
            name: getattr(self, name)
            for name in ("n_tokens", "init_word", "inner_iters", "lr", "optimizer", "window_start", "window_end",
                         "every_k", "pairs", "gap_min", "gap_max", "lambda_disc", "lambda_tv", "lambda_drift",
                         "disc_loss", "x0_mode", "cond_after", "grad_checkpointing")
            if getattr(self, name) is not None
        }
        overrides["seed"] = generation_seed if self.seed < 0 else self.seed
        cfg = preset(self.preset, **overrides)
        preset_flow = PRESETS[self.preset].get("flow", {})
        base = disc_flow if disc_flow is not None else cfg.flow
        cfg.flow = FlowSettings(
            self.flow_backend or base.backend,
            self.flow_size or preset_flow.get("size", base.size),
            self.flow_iters or preset_flow.get("iters", base.iters),
        )
        cfg.unet_autocast = "none"  # the WebUI already runs sampling under its own autocast
        return cfg.validate()

    # ------------------------------------------------------------------ infotext
    def to_infotext(self) -> str:
        """``key: value, ...`` with what differs from the preset (short, like adetailer), so the UI's
        explicit values and an API dict that leaves them to the preset write the same text."""
        implied = self.preset_values(self.preset)
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "enabled" or value is None:
                continue
            if f.name in ("discriminator", "preset") or value != implied.get(f.name, getattr(MotionPromptArgs, f.name)):
                parts.append(f"{f.name}: {_format(value)}")
        return ", ".join(parts)

    @staticmethod
    def preset_values(name: str) -> dict:
        """The value every engine field takes under a preset (what the UI's Preset radio writes)."""
        cfg = GuidanceConfig.from_dict(PRESETS[name])
        names = set(MotionPromptArgs.field_names())
        values = {k: v for k, v in cfg.to_dict().items() if k in names and k != "seed"}
        flow = PRESETS[name].get("flow", {})
        values.update(flow_size=flow.get("size"), flow_iters=flow.get("iters"))
        return values

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


def _kind(f) -> type:
    text = str(f.type)
    for name, kind in (("bool", bool), ("int", int), ("float", float)):
        if text.startswith(name):
            return kind
    return str


def _format(value) -> str:
    """Commas and ': ' would break the ``key: value, ...`` list; file names may contain them."""
    return str(value).replace(",", " ").replace(": ", " ")
