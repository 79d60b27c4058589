"""A txt2img job with AnimateDiff on, made from the tab (not from the txt2img page).

The WebUI's API fills a script's arguments from its UI defaults and lets a dict stand for a script's own (API
style: AnimateDiff master and forge/master both turn a dict into their ``AnimateDiffProcess``; MotionPrompt's
accordion reads a dict the same way). We do the same with the txt2img ``ScriptRunner`` that page uses, its
``inputs`` holding each control's default (index 0: the selectable-script dropdown, 0 = none).
"""

from __future__ import annotations


class AnimateDiffMissing(RuntimeError):
    """AnimateDiff is not installed (or not loaded) in this WebUI."""


def script_of(runner, title: str):
    for script in getattr(runner, "alwayson_scripts", None) or []:
        try:
            if str(script.title()).lower() == title.lower():
                return script
        except Exception:
            continue
    return None


def animatediff_txt2img(prompt: str, seed: int, frames: int, width: int, height: int, steps: int, cfg_scale: float,
                        outdir: str, sampler: str = "Euler", negative_prompt: str = "", motion_module: str | None = None,
                        animatediff: dict | None = None):
    """A ``StableDiffusionProcessingTxt2Img`` for one ``frames``-frame clip with AnimateDiff on (context batch size =
    the video length: the whole clip is one UNet batch) and MotionPrompt off; the caller runs it with
    ``processing.process_images``. The WebUI saves no image of it; AnimateDiff insists on one video format
    (``AnimateDiffProcess._check``) and writes it under ``<outdir>/AnimateDiff/<date>/``: give a folder you clear.
    ``motion_module``: AnimateDiff's "model" (its API dict defaults to mm_sd15_v3.safetensors, not the UI's pick);
    ``animatediff``: more of AnimateDiff's API keys."""
    from modules import processing, scripts, shared

    runner = getattr(scripts, "scripts_txt2img", None)
    ad = script_of(runner, "AnimateDiff")
    if ad is None:
        raise AnimateDiffMissing("AnimateDiff is not installed or not loaded (sd-webui-animatediff; on Forge its "
                                 "forge/master branch): the tab samples video clips through it")
    if getattr(shared, "sd_model", None) is None:
        raise RuntimeError("no Stable Diffusion checkpoint is loaded")
    args = [getattr(c, "value", None) for c in runner.inputs]
    args[0] = 0
    args[ad.args_from] = {"enable": True, "video_length": int(frames), "batch_size": int(frames), "format": ["GIF"],
                          **({"model": motion_module} if motion_module else {}), **(animatediff or {})}
    ours = script_of(runner, "MotionPrompt")
    if ours is not None:
        args[ours.args_from] = {"enabled": False}
    p = processing.StableDiffusionProcessingTxt2Img(
        sd_model=shared.sd_model, prompt=prompt, negative_prompt=negative_prompt, seed=int(seed), steps=int(steps),
        cfg_scale=float(cfg_scale), width=int(width), height=int(height), batch_size=int(frames), n_iter=1,
        sampler_name=sampler, scripts=runner, script_args=args, outpath_samples=str(outdir))
    p.do_not_save_samples = True
    p.do_not_save_grid = True
    p.is_api = True  # dict arguments as the API sends them: forge/master converts AnimateDiff's only for API jobs
    return p
