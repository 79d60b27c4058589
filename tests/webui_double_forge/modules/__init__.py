"""Forge ``previous``'s ``modules`` package: this folder holds the files Forge changed (processing, the CFG denoiser,
the samplers, sd_models); every other submodule resolves to the A1111 double's file (same code upstream)."""

from pathlib import Path

__path__.append(str(Path(__file__).resolve().parents[2] / "webui_double" / "modules"))
