"""Before a guided generation starts: can this WebUI/job be guided at all, and the models guidance needs.

Everything here runs in ``Script.process`` (after every script's ``before_process``, so AnimateDiff's parameters
are final) and raises nothing into the host: a problem is a sentence for the user.
"""

from __future__ import annotations

from ...disc.checkpoint import CheckpointError, Discriminator, load_discriminator
from ...flow.registry import FlowWeightsMissing, build_flow
from . import animatediff, flavour, forge, paths
from .args import MotionPromptArgs

_MODEL_CACHE: dict[str, tuple] = {}


class GuidanceUnavailable(Exception):
    """A reason, for the user, why this generation runs without guidance."""


def host_problem(p) -> str | None:
    """Why this WebUI/job cannot be guided at all, or None."""
    from modules import script_callbacks, shared

    sd_model = p.sd_model
    family = flavour.kind(sd_model)
    if flavour.problem(family):
        return flavour.problem(family)
    if "denoiser" not in script_callbacks.CFGDenoiserParams.__init__.__code__.co_varnames:
        return "this WebUI is older than 1.8 (its CFG callback has no denoiser); update A1111"
    if getattr(sd_model, "is_sdxl", False) or getattr(sd_model, "is_sdxl_inpaint", False):
        return "SDXL models are not supported yet (their text encoders run without gradients)"
    if family == flavour.A1111 and (getattr(sd_model, "lowvram", False) or getattr(shared.cmd_opts, "medvram", False)
                                    or getattr(shared.cmd_opts, "lowvram", False)):
        # Forge ignores these flags (README "Forge Backend"): its memory manager moves models itself (forge.py)
        return "--medvram/--lowvram move the UNet off the GPU between forward and backward; start without them"
    if not animatediff.installed():
        return "sd-webui-animatediff is not installed"
    ad = animatediff.state()
    if ad is None:
        return "AnimateDiff is off for this generation; MotionPrompt guides AnimateDiff videos"
    if family == flavour.FORGE:
        return forge.problem(ad)
    return None


def load_disc(args: MotionPromptArgs, device) -> Discriminator:
    """The selected discriminator, cached while the file stays the same."""
    if not args.discriminator:
        raise GuidanceUnavailable(
            f"no discriminator selected; train one in the MotionPrompt tab or put a .safetensors file in {paths.models_dir()}"
        )
    path = paths.resolve_discriminator(args.discriminator)
    try:
        key = f"{path}|{path.stat().st_mtime_ns}|{device}"
    except OSError:
        key = None
    cached_key, disc = _MODEL_CACHE.get("disc", (None, None))
    if key is None or cached_key != key:
        try:
            disc = load_discriminator(path, device)
        except CheckpointError as exc:
            hint = "; put discriminators (.safetensors) there or train one in the MotionPrompt tab" if not path.exists() else ""
            raise GuidanceUnavailable(f"{exc}{hint}") from exc
        _MODEL_CACHE["disc"] = (key, disc)
    return disc


def build_run_flow(cfg, device):
    key = f"{cfg.flow.backend}|{cfg.flow.size}|{cfg.flow.iters}|{device}"
    cached = _MODEL_CACHE.get("flow")
    if cached and cached[0] == key:
        return cached[1]
    try:
        flow = build_flow(cfg.flow, paths.flow_weights_dirs(), allow_download=paths.allow_download())
    except FlowWeightsMissing as exc:
        raise GuidanceUnavailable(str(exc)) from exc
    flow = flow.to(device)
    _MODEL_CACHE["flow"] = (key, flow)
    return flow


def clear_cache() -> None:
    _MODEL_CACHE.clear()
