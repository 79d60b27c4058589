"""What a ``--model`` names, and the world of cases a model may come with: the registries that ``generate``,
``token-train`` and ``evaluate`` load through.

Built in: ``"tiny"`` (random weights) and, for any other spec, a diffusers folder. A model family of its own
registers a ``SourceKind`` (which specs it takes, how it loads them, the file a spec names, its world) and, with
it, a ``World``: the captions it knows by split, seeds by purpose, and the measures only that world can take
(ground truth of a clip, real clips of a caption). The toy world does so when ``motionprompt.toy`` is imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ModelSource:
    model: object  # VideoModel
    frames: int
    size: int
    info: dict  # what the token's metadata says about the model
    sampling: dict = field(default_factory=dict)  # generate's defaults where the model has its own (prompt, steps...)
    notes: list[str] = field(default_factory=list)  # what generate says about the model


@dataclass(frozen=True)
class SourceKind:
    name: str
    matches: Callable[[str], bool]
    load: Callable[..., ModelSource]  # (spec, frames, size, device, motion_adapter) -> ModelSource
    file: Callable[[str], Path] | None = None  # the weights file a spec names (None: the spec is a path)
    world: str | None = None


@dataclass(frozen=True)
class World:
    name: str
    title: str  # how a record names it ("toy world")
    captions: Callable[[str], list[str]]  # split -> its captions ("eval": held out; "guide": token-train's)
    seeds: Callable[[str, int], list[int]]  # (purpose, n) -> the first n seeds of that purpose
    writes: Callable[[str], bool]  # is a prompt a caption of this world (ground truth and real clips exist)?
    truth: Callable[[object, str], dict]  # (uint8 frames [F, H, W, 3], caption) -> ground-truth measures
    truth_keys: tuple[str, ...]  # what ``truth`` measures (None for a prompt it does not write)
    real_clip: Callable[[str, int, int], object]  # (caption, seed, size) -> a real clip, uint8 [F, H, W, 3]


_KINDS: list[SourceKind] = []
_WORLDS: dict[str, World] = {}
_default_world: str | None = None


def register_source(kind: SourceKind) -> None:
    """Add (or replace, by name) a model kind; kinds are asked in the order they were first registered."""
    for i, k in enumerate(_KINDS):
        if k.name == kind.name:
            _KINDS[i] = kind
            return
    _KINDS.append(kind)


def register_world(world: World, default: bool = False) -> None:
    """``default``: the world of a model without one of its own (token-train's prompts and seeds)."""
    global _default_world
    _WORLDS[world.name] = world
    if default:
        _default_world = world.name


def source_kind(spec: str) -> SourceKind | None:
    """The registered kind that takes ``spec``; None: a diffusers folder."""
    return next((k for k in _KINDS if k.matches(str(spec))), None)


def load_source(spec: str, frames: int = 16, size: int = 64, device="cpu", motion_adapter: str | None = None
                ) -> ModelSource:
    """``--model``: a registered kind's spec ("tiny", "toy", a toy model file...) or a diffusers folder.
    ``frames``/``size``: what to sample where the model does not fix them. A WebUI checkpoint, motion module or pickle
    file is refused with what to pass instead (``refuse_files``)."""
    refuse_files(os.fspath(spec), motion_adapter)
    kind = source_kind(spec)
    if kind is not None:
        return kind.load(spec, frames=frames, size=size, device=device, motion_adapter=motion_adapter)
    from .models import load_model

    return ModelSource(load_model(spec, motion_adapter), frames, size,
                       {"kind": "diffusers", "folder": os.path.basename(spec.rstrip("/"))})


def weights_file(spec: str | os.PathLike) -> Path:
    """The file a spec names (a registered name such as "toy" -> its shipped weights; else the spec as a path)."""
    kind = source_kind(os.fspath(spec))
    return kind.file(os.fspath(spec)) if kind is not None and kind.file is not None else Path(spec)


def world(name: str) -> World:
    if name not in _WORLDS:
        raise ValueError(f"no world {name!r} registered (import the package that brings it, e.g. motionprompt.toy)")
    return _WORLDS[name]


def model_world(spec: str) -> World | None:
    """The world a ``--model`` comes with; None: it knows no world of captions (a diffusers folder, "tiny")."""
    kind = source_kind(spec)
    return world(kind.world) if kind is not None and kind.world else None


def world_for(spec: str) -> World:
    """The model's world, or the default world for a model without one."""
    found = model_world(spec)
    if found is not None:
        return found
    if _default_world is None:
        raise ValueError("no default world of captions registered (import motionprompt.toy)")
    return world(_default_world)


#: weights files that are pickles: never loaded (a pickle runs code when read)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
HOW_TO_LOAD = (
    "token-train and generate load diffusers folders, offline: --model DIR, an AnimateDiff diffusers folder (its unet is "
    "a UNetMotionModel), or an SD1.5 diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, "
    "scheduler/) with --motion-adapter DIR, a diffusers MotionAdapter folder (config.json and "
    "diffusion_pytorch_model.safetensors, e.g. guoyww/animatediff-motion-adapter-v1-5-2). To make a token for a WebUI "
    "checkpoint and AnimateDiff motion module as they are, use the WebUI's MotionPrompt tab (Motion token section): "
    "it trains through the WebUI's own model path, nothing to convert. (One way to convert a checkpoint, on a "
    "machine with internet for diffusers' configs: python -c \"from diffusers import StableDiffusionPipeline as P; "
    "P.from_single_file('FILE.safetensors').save_pretrained('DIR')\".)"
)


def single_file_kind(path: str) -> str | None:
    """What a weights *file* given as ``--model``/``--motion-adapter`` is, when it is not for us: "pickle", "sd" (a
    single-file Stable Diffusion checkpoint: LDM keys ``model.diffusion_model.*``, as in the WebUI's
    models/Stable-diffusion), "motion module" (an AnimateDiff one: ``*.temporal_transformer.*`` keys), or None.
    Reads a safetensors file's header only."""
    if not os.path.isfile(path):
        return None
    if path.lower().endswith(PICKLE_SUFFIXES):
        return "pickle"
    if not path.lower().endswith(".safetensors"):
        return None
    try:
        from safetensors import safe_open

        with safe_open(path, framework="pt", device="cpu") as f:
            keys = list(f.keys())
    except Exception:
        return None
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "sd"
    if any(".temporal_transformer." in k for k in keys):
        return "motion module"
    return None


def refuse_files(spec: str, motion_adapter: str | None) -> None:
    """A clear refusal, before anything loads, for files token-train and generate cannot take (see HOW_TO_LOAD)."""
    for flag, path in (("--model", spec), ("--motion-adapter", motion_adapter)):
        kind = single_file_kind(path) if path else None
        if kind == "pickle":
            raise ValueError(f"{flag} {path}: a pickle file (.ckpt/.pt/.pth/.bin) is never loaded (it can run code); "
                             f"use the .safetensors version. {HOW_TO_LOAD}")
        if kind == "sd":
            raise ValueError(f"{flag} {path} is a single-file Stable Diffusion checkpoint (the WebUI's format). "
                             f"{HOW_TO_LOAD}")
        if kind == "motion module":
            raise ValueError(f"{flag} {path} is an AnimateDiff motion module file (the WebUI's format). {HOW_TO_LOAD}")
        if flag == "--motion-adapter" and path and os.path.isfile(path):
            raise ValueError(f"--motion-adapter {path} is a file; it takes a diffusers MotionAdapter folder. "
                             f"{HOW_TO_LOAD}")


def _load_tiny(spec, frames, size, device="cpu", motion_adapter=None) -> ModelSource:
    from .models import tiny_model

    return ModelSource(tiny_model(seed=0), frames, size, {"kind": "tiny (random weights)"},
                       notes=["tiny random-weight AnimateDiff-shaped model: frames are noise-like, only the mechanics "
                              "are real"])


register_source(SourceKind("tiny", lambda spec: spec == "tiny", _load_tiny))
