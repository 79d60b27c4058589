"""The toy world plugged in as any model is: ``--model toy`` (the shipped model) or a toy model ``.safetensors``
for ``generate``, ``token-train`` and ``evaluate``, and its world of cases (the protocol's captions and seeds,
ground truth, real clips). ``motionprompt.toy`` registers both when imported; nothing heavy is imported here.
"""

from __future__ import annotations

import functools

from ..hosts.diffusers import sources
from ..hosts.diffusers.sources import ModelSource, SourceKind, World, register_source, register_world

#: what ``truth.clip_truth`` measures (``ClipTruth``'s fields)
TRUTH_KEYS = ("visible_frac", "direction_ok", "displacement", "off_axis", "speed_error", "area_cv", "jerk",
              "colour_purity")


def _is_toy(spec: str) -> bool:
    """"toy", or a ``.safetensors`` that is not a WebUI file (an SD checkpoint or motion module: their own kinds)."""
    return spec == "toy" or (spec.endswith(".safetensors") and sources.single_file_kind(spec) is None)


def _file(spec: str):
    from .model import model_file

    return model_file(spec)


def _load(spec: str, frames: int, size: int, device="cpu", motion_adapter=None) -> ModelSource:
    """A toy model brings its own frames, size and sampler defaults (``frames``/``size`` are not used)."""
    from ..amortized.token_file import file_sha256
    from .model import load_model, model_file
    from .sample import DEFAULT_CFG, DEFAULT_STEPS

    path = model_file(spec)
    parts = load_model(path, device)
    info = {"kind": "toy", "file": path.name, "sha256": file_sha256(path), "unet_steps": parts.meta.get("unet_steps")}
    sampling = {"prompt": "a red circle moving right slowly", "height": parts.arch.size, "width": parts.arch.size,
                "frames": parts.arch.frames, "steps": DEFAULT_STEPS, "cfg": DEFAULT_CFG}
    note = (f"toy-world model ({parts.meta.get('unet_steps', '?')} training steps): it knows only captions of its "
            "world (python -m motionprompt toy-check)")
    return ModelSource(parts.video_model(), parts.arch.frames, parts.arch.size, info, sampling, [note])


def _captions(split: str) -> list[str]:
    from .protocol import caption_split

    return caption_split()[split]


def _seeds(kind: str, n: int) -> list[int]:
    from .protocol import seeds

    return seeds(kind, n)


@functools.lru_cache(maxsize=4096)
def writes(prompt: str) -> bool:
    """Is ``prompt`` a caption the toy world writes (so it has ground truth and real clips)?"""
    from .sample import real_clip

    try:
        real_clip(prompt, 0, size=8)
    except (ValueError, KeyError):
        return False
    return True


def _truth(frames, prompt: str) -> dict:
    from .truth import clip_truth

    return clip_truth(frames, prompt).to_dict()


def _real_clip(caption: str, seed: int, size: int):
    from .sample import real_clip

    return real_clip(caption, seed, size=size)


def register() -> None:
    register_world(World("toy", "toy world", _captions, _seeds, writes, _truth, TRUTH_KEYS, _real_clip), default=True)
    register_source(SourceKind("toy", _is_toy, _load, _file, world="toy"))
