"""What a ``--model`` names, and the world of cases a model may come with: the registries that ``generate``,
``token-train`` and ``evaluate`` load through.

Built in: ``"tiny"`` (random weights), a single-file SD1.5 checkpoint (with an AnimateDiff motion module and
SD1.5's diffusers configs, loaded offline) and, for any other spec, a diffusers folder. A model family of its own
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
    load: Callable[..., ModelSource]  # (spec, frames, size, device, motion_adapter[, config]) -> ModelSource
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


def load_source(spec: str, frames: int = 16, size: int = 64, device="cpu", motion_adapter: str | None = None,
                config: str | None = None) -> ModelSource:
    """``--model``: a registered kind's spec ("tiny", "toy", a toy model file, a single-file SD1.5 checkpoint with
    ``motion_adapter`` and ``config``) or a diffusers folder. ``frames``/``size``: what to sample where the model does
    not fix them. What cannot load (a pickle, a checkpoint without its motion module or configs...) is refused with
    what to pass instead, before any weights load (``refuse_files``)."""
    refuse_files(os.fspath(spec), motion_adapter, config)
    kind = source_kind(spec)
    if kind is not None:
        extra = {"config": config} if config else {}
        return kind.load(spec, frames=frames, size=size, device=device, motion_adapter=motion_adapter, **extra)
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
#: what an SD1.5 config folder (``--config``) must hold: diffusers' configs and CLIP's tokenizer files, no weights
SD15_CONFIG_FILES = ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                     "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json")
#: Hugging Face repositories whose cached configs serve as the config folder when no --config is given
SD15_CONFIG_REPOS = ("stable-diffusion-v1-5/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5")
#: fetches exactly those files (and the tokenizer's settings), about 2 MB; older huggingface_hub: huggingface-cli download
GET_CONFIG = ("hf download stable-diffusion-v1-5/stable-diffusion-v1-5 model_index.json unet/config.json "
              "vae/config.json text_encoder/config.json tokenizer/vocab.json tokenizer/merges.txt "
              "tokenizer/tokenizer_config.json tokenizer/special_tokens_map.json scheduler/scheduler_config.json "
              "--local-dir sd15-config")
#: the alternative that needs no files at all
USE_THE_TAB = ("To make a token for the WebUI's checkpoint and motion module without any of this, use the WebUI's "
               "MotionPrompt tab (Motion token section): it trains through the WebUI's own model path.")
HOW_TO_LOAD = (
    "token-train and generate load, offline: --model FILE.safetensors, a single-file SD1.5 checkpoint (the WebUI's "
    "models/Stable-diffusion/), with --motion-adapter FILE.safetensors, an AnimateDiff motion module (or a diffusers "
    "MotionAdapter folder), and --config DIR, SD1.5's diffusers configs and CLIP tokenizer without weights (on a "
    f"machine with internet, once, about 2 MB: {GET_CONFIG}; older huggingface_hub: huggingface-cli download, same "
    "arguments); or --model DIR, an AnimateDiff diffusers folder (its unet is a UNetMotionModel) or an SD1.5 "
    f"diffusers folder with --motion-adapter. {USE_THE_TAB}"
)


def single_file_kind(path: str) -> str | None:
    """What a weights *file* given as ``--model``/``--motion-adapter`` is: "pickle" (never loaded), "sd" (a single-file
    SD1.x checkpoint: LDM keys ``model.diffusion_model.*`` and CLIP's ``cond_stage_model.transformer.*``, as in the
    WebUI's models/Stable-diffusion), "sd other" (an SD2/SDXL one), "motion module" (an AnimateDiff one:
    ``*.temporal_transformer.*`` keys), or None (not a file, or none of these). Reads a safetensors header only."""
    if not os.path.isfile(path):
        return None
    if path.lower().endswith(PICKLE_SUFFIXES):
        return "pickle"
    if not path.lower().endswith(".safetensors"):
        return None
    keys = _header_keys(path)
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "sd" if any(k.startswith("cond_stage_model.transformer.") for k in keys) else "sd other"
    if any(".temporal_transformer." in k for k in keys):
        return "motion module"
    return None


def _header_keys(path: str) -> list[str]:
    try:
        from safetensors import safe_open

        with safe_open(path, framework="pt", device="cpu") as f:
            return list(f.keys())
    except Exception:
        return []


def sd15_config_dir(config: str | None = None) -> str | None:
    """The folder of SD1.5's diffusers configs and tokenizer: ``config`` when given (checked), else a local Hugging
    Face cache of stable-diffusion-v1-5 that holds them (``SD15_CONFIG_REPOS``; nothing is downloaded), else None."""
    if config:
        return os.fspath(config)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    for repo in SD15_CONFIG_REPOS:
        try:
            folder = snapshot_download(repo, local_files_only=True)
        except Exception:  # not cached (LocalEntryNotFoundError), or a cache we cannot read
            continue
        if not _missing_config_files(folder):
            return folder
    return None


def _missing_config_files(folder: str) -> list[str]:
    return [name for name in SD15_CONFIG_FILES if not os.path.isfile(os.path.join(folder, name))]


def refuse_files(spec: str, motion_adapter: str | None, config: str | None = None) -> None:
    """A clear refusal, before anything loads, for what token-train and generate cannot load (see HOW_TO_LOAD): a
    pickle, a single-file SD checkpoint without a motion module or without SD1.5's configs, an SD2/SDXL checkpoint,
    a motion module given as the model, a motion module beside a model that brings its own motion layers."""
    spec = os.fspath(spec)
    for flag, path in (("--model", spec), ("--motion-adapter", motion_adapter)):
        if path and single_file_kind(path) == "pickle":
            raise ValueError(f"{flag} {path}: a pickle file (.ckpt/.pt/.pth/.bin) is never loaded (it can run code); "
                             f"use the .safetensors version of the same weights. {HOW_TO_LOAD}")
    kind = single_file_kind(spec)
    if kind == "sd other":
        raise ValueError(f"--model {spec} is a single-file Stable Diffusion checkpoint but not SD1.x (its text encoder "
                         "is not CLIP ViT-L: SD2 or SDXL); AnimateDiff's SD1.5 motion modules need an SD1.5 "
                         f"checkpoint. {HOW_TO_LOAD}")
    if kind == "motion module":
        raise ValueError(f"--model {spec} is an AnimateDiff motion module file: give it as --motion-adapter, and the "
                         f"SD1.5 checkpoint as --model. {HOW_TO_LOAD}")
    adapter = single_file_kind(motion_adapter) if motion_adapter else None
    if motion_adapter and os.path.isfile(motion_adapter) and adapter != "motion module":
        raise ValueError(f"--motion-adapter {motion_adapter} is not an AnimateDiff motion module (no "
                         f"*.temporal_transformer.* weights). {HOW_TO_LOAD}")
    if motion_adapter and source_kind(spec) is not None and kind != "sd":
        raise ValueError(f"--motion-adapter goes with an SD1.5 checkpoint file or an SD1.5 diffusers folder as "
                         f"--model; {spec} brings its own motion layers. {HOW_TO_LOAD}")
    if config and kind != "sd":
        raise ValueError(f"--config DIR (SD1.5's diffusers configs) goes with a single-file SD1.5 checkpoint as "
                         f"--model; {spec} is not one. {HOW_TO_LOAD}")
    if kind != "sd":
        return
    if not motion_adapter:
        raise ValueError(f"--model {spec} is a single-file SD1.5 checkpoint without motion layers: add "
                         "--motion-adapter FILE.safetensors, an AnimateDiff motion module (e.g. the WebUI's "
                         f"extensions/sd-webui-animatediff/model/mm_sd15_v3.safetensors). {HOW_TO_LOAD}")
    if config:
        if not os.path.isdir(config):
            raise ValueError(f"--config {config} is not a folder; it takes SD1.5's diffusers configs and tokenizer "
                             f"(get them with: {GET_CONFIG}). {USE_THE_TAB}")
        missing = _missing_config_files(config)
        if missing:
            raise ValueError(f"--config {config} lacks {', '.join(missing)}: it takes SD1.5's diffusers configs and "
                             f"tokenizer (get them with: {GET_CONFIG}). {USE_THE_TAB}")
    elif sd15_config_dir(None) is None:
        raise ValueError(f"--model {spec} is a single-file SD1.5 checkpoint; loading it offline needs SD1.5's diffusers "
                         "configs and CLIP tokenizer files, which are neither given (--config DIR) nor in the local "
                         "Hugging Face cache. Get them once on a machine with internet (about 2 MB, no weights): "
                         f"{GET_CONFIG} (older huggingface_hub: huggingface-cli download, same arguments), copy "
                         f"sd15-config/ here and add --config sd15-config. {USE_THE_TAB}")


def _load_tiny(spec, frames, size, device="cpu", motion_adapter=None) -> ModelSource:
    from .models import tiny_model

    return ModelSource(tiny_model(seed=0), frames, size, {"kind": "tiny (random weights)"},
                       notes=["tiny random-weight AnimateDiff-shaped model: frames are noise-like, only the mechanics "
                              "are real"])


def _load_single_file(spec, frames, size, device="cpu", motion_adapter=None, config=None) -> ModelSource:
    """A single-file SD1.5 checkpoint + an AnimateDiff motion module, through diffusers' single-file loaders, offline
    (``models.load_single_file``); ``refuse_files`` has checked both files and found the config folder."""
    from .models import load_single_file

    folder = sd15_config_dir(config)
    model = load_single_file(spec, motion_adapter, folder)
    info = {"kind": "sd1.5 single file", "file": os.path.basename(spec),
            "motion_module": os.path.basename(os.fspath(motion_adapter).rstrip("/"))}
    return ModelSource(model, frames, size, info,
                       notes=[f"single-file SD1.5 checkpoint {info['file']} + motion module {info['motion_module']} "
                              f"(configs: {folder}), DDIM with AnimateDiff's linear betas"])


register_source(SourceKind("tiny", lambda spec: spec == "tiny", _load_tiny))
register_source(SourceKind("sd1.5 single file", lambda spec: single_file_kind(spec) == "sd", _load_single_file))
