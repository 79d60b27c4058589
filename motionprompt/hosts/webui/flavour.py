"""Which WebUI this is, as far as guidance is concerned.

* A1111 1.8-1.10: the model has no ``forge_objects``; sampling runs under ``torch.no_grad``, the CFG callback
  sees ``[cond; uncond]`` (2·B rows) and the k-diffusion/timestep wrappers call the UNet.
* Forge, ldm_patched family — early-2024 Forge (tag ``previous``, bfee03d8) and reForge: the model carries
  ``forge_objects`` (a ``UnetPatcher``, the VAE, CLIP); ``modules/sd_samplers_cfg_denoiser.py`` imports
  ``modules_forge.forge_sampler``, fires the callback with B rows and hands them to
  ``ldm_patched.modules.samplers.sampling_function``; the job runs in ``torch.inference_mode``.
  sd-webui-animatediff ``forge/master`` runs here, so guidance does (``forge.py``).
* Forge 2 (current ``main``, ``backend/``): ``ldm_patched`` and ``modules_forge.unet_patcher`` are gone, so
  AnimateDiff cannot even import (sd-webui-animatediff #560). Guidance is off with that reason; the training tab
  works.
"""

from __future__ import annotations

import importlib
import importlib.util

A1111, FORGE, FORGE2, FORGE_OTHER = "a1111", "forge", "forge2", "forge-other"

NOT_SUPPORTED = "Forge is not supported for guidance"
PROBLEMS = {
    FORGE2: (f"{NOT_SUPPORTED} on Forge 2 (current main, backend/): AnimateDiff cannot run there (sd-webui-animatediff "
             "forge/master needs modules_forge.unet_patcher and ldm_patched, which Forge 2 removed). Use early-2024 Forge "
             "(git tag 'previous') or reForge; the MotionPrompt tab (discriminator training) works here"),
    FORGE_OTHER: (f"{NOT_SUPPORTED} on this version: its sampling path is neither early-2024 Forge's nor reForge's "
                  "(no modules_forge.forge_sampler in the CFG denoiser, or no ldm_patched calc_cond_uncond_batch)"),
}


def kind(sd_model) -> str:
    """The family of the WebUI running ``sd_model`` (see the module doc)."""
    if not hasattr(sd_model, "forge_objects"):
        return A1111
    if _ldm_patched_sampling() and hasattr(getattr(sd_model.forge_objects, "unet", None), "model_options"):
        return FORGE
    if _exists("backend") and not _exists("ldm_patched"):
        return FORGE2
    return FORGE_OTHER


def problem(family: str) -> str | None:
    return PROBLEMS.get(family)


def ui_kind() -> str:
    """The same question before any model is loaded (the accordion is built at start-up): by the packages present."""
    if not _exists("modules_forge"):
        return A1111
    if _exists("ldm_patched"):
        return FORGE
    return FORGE2 if _exists("backend") else FORGE_OTHER


def label() -> str:
    """For the infotext/report: ``modules_forge/forge_version.py`` says which Forge (``previous``: '0.0.17v1.8.0rc',
    reForge main: '1.0.0v2-v1.10.1RC')."""
    try:
        version = importlib.import_module("modules_forge.forge_version").version
    except Exception:
        return "Forge"
    return f"Forge {version}"


def _ldm_patched_sampling() -> bool:
    """Forge ``previous`` and reForge both import ``forge_sampler`` into the CFG denoiser module and keep ComfyUI's
    ``calc_cond_uncond_batch`` (reForge: a wrapper over ``calc_cond_batch``)."""
    try:
        denoiser = importlib.import_module("modules.sd_samplers_cfg_denoiser")
        samplers = importlib.import_module("ldm_patched.modules.samplers")
    except Exception:
        return False
    return hasattr(denoiser, "forge_sampler") and hasattr(samplers, "calc_cond_uncond_batch")


def _exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
