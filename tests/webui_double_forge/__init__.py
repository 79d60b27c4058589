"""A faithful test double of early-2024 Forge (tag ``previous`` = bfee03d8; code of 29be1da7) + sd-webui-animatediff
``forge/master`` (b20f7519), for the extension's Forge path.

Only what Forge changed is here; ``modules/__init__.py`` appends the A1111 double's ``modules`` folder to this
package's path, so the unchanged files (scripts, script_callbacks, shared, prompt_parser, sd_hijack, sd_hijack_clip,
...) are the A1111 double's — Forge ``previous`` is A1111 1.8 underneath. Each file names the upstream file it
mirrors: sampling in ``torch.inference_mode``, B-row callback params and ``forge_sample``, ComfyUI's
``calc_cond_uncond_batch`` ([uncond; cond] batches, ``model_function_wrapper``, ``transformer_options``), the
UnetPatcher and its clones, model moves through ``model_management.load_models_gpu`` (inside the job's inference
mode), ldm_patched's in-place residual adds, and AnimateDiff forge/master's injection, windows and short-video
fault. ``tests/webui_host.py`` puts this folder before the A1111 double on ``sys.path``.
"""
