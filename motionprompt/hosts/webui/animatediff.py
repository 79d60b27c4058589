"""Reading sd-webui-animatediff's state, lazily and defensively.

AnimateDiff keeps its per-run parameters on a module-level singleton
(``scripts.animatediff_mm.mm_animatediff.ad_params``, an ``AnimateDiffProcess``), sets them in its
``before_process`` and fills ``text_cond`` in its own ``cfg_denoiser`` callback at step 0. We read it
only from inside sampling, so the order of the two extensions' hooks does not matter.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass


@dataclass
class AnimateDiffState:
    params: object  # AnimateDiffProcess
    video_length: int
    context: int  # AnimateDiff's "context batch size"
    closed_loop: str
    injected: bool

    @property
    def windows(self) -> int:
        return 1 if self.video_length <= self.context else -(-self.video_length // self.context)

    @property
    def prompt_closed_loop(self) -> bool:
        """The exact rule AnimateDiff uses when it interpolates prompt-travel rows."""
        return self.video_length > self.context and self.closed_loop in ("R+P", "A")

    def multi_cond(self, rows):
        """Prompt travel: AnimateDiff's own per-frame interpolation of key-frame rows (differentiable)."""
        scheduler = getattr(self.params, "prompt_scheduler", None)
        if scheduler is None:
            return rows
        return scheduler.multi_cond(rows, self.prompt_closed_loop)

    @property
    def text_cond(self):
        return getattr(self.params, "text_cond", None)

    @text_cond.setter
    def text_cond(self, value) -> None:
        self.params.text_cond = value


def module():
    return sys.modules.get("scripts.animatediff_mm")


def scheduler():
    """AnimateDiff's own context-window generator (``AnimateDiffInfV2V.uniform``), looked up at call time."""
    mod = sys.modules.get("scripts.animatediff_infv2v")
    cls = getattr(mod, "AnimateDiffInfV2V", None) if mod else None
    return getattr(cls, "uniform", None)


def scoring_windows(windows: list[list[int]], frames) -> list[list[int]]:
    """The context windows whose output a scored frame gets, in AnimateDiff's order. Its forward scatters
    each window's output into the frames it covers, a later window overwriting an earlier one; a window that
    is not the last writer of any scored frame changes nothing the loss reads, so it need not run."""
    wanted = {int(f) for f in frames}
    last = {}
    for k, window in enumerate(windows):
        for f in window:
            last[int(f)] = k
    keep = sorted({last[f] for f in wanted if f in last})
    return [windows[k] for k in keep]


@contextlib.contextmanager
def only_windows(frames, ran: list | None = None):
    """While it is open, AnimateDiff's own scheduler yields only ``scoring_windows`` for ``frames`` (Forge: its
    ``mm_sd_forward`` runs the windows itself); restored afterwards, also on an error. None: unchanged.
    ``ran`` gets the length of every window it lets run."""
    mod = sys.modules.get("scripts.animatediff_infv2v")
    cls = getattr(mod, "AnimateDiffInfV2V", None) if mod else None
    plain = getattr(cls, "uniform", None) if cls is not None else None  # a staticmethod, maybe inherited (Forge)
    if frames is None or plain is None:
        yield
        return
    own = "uniform" in cls.__dict__
    original = cls.__dict__.get("uniform")

    def uniform(*args, **kwargs):
        windows = scoring_windows(list(plain(*args, **kwargs)), frames)
        if ran is not None:
            ran.extend(len(w) for w in windows)
        return iter(windows)

    cls.uniform = staticmethod(uniform)
    try:
        yield
    finally:
        if own:
            cls.uniform = original
        else:
            del cls.uniform


def forge_wrapper():
    """AnimateDiff forge/master's ``model_function_wrapper`` (``AnimateDiffInfV2V.mm_sd_forward``, a staticmethod that
    ``inject`` installs on a clone of Forge's UnetPatcher); None without that branch."""
    mod = sys.modules.get("scripts.animatediff_infv2v")
    cls = getattr(mod, "AnimateDiffInfV2V", None) if mod else None
    return getattr(cls, "mm_sd_forward", None)


def installed() -> bool:
    return module() is not None


def state() -> AnimateDiffState | None:
    """The running AnimateDiff job, or None when AnimateDiff is absent or disabled. ``injected`` is master's class
    flag; forge/master has none and injects per sampling (``forge.ForgePath.injected``)."""
    mod = module()
    mm = getattr(mod, "mm_animatediff", None) if mod else None
    params = getattr(mm, "ad_params", None)
    if params is None or not getattr(params, "enable", False):
        return None
    injected = bool(getattr(type(mm), "mm_injected", getattr(mm, "mm_injected", False)))
    return AnimateDiffState(
        params=params,
        video_length=int(getattr(params, "video_length", 0) or 0),
        context=int(getattr(params, "batch_size", 16) or 16),
        closed_loop=str(getattr(params, "closed_loop", "N")),
        injected=injected,
    )


def v1_groupnorm_hack() -> bool:
    """V1/HotShot motion modules normalise over two batch halves: only full cond+uncond calls are safe."""
    mm = getattr(module(), "mm_animatediff", None)
    inner = getattr(mm, "mm", None)
    try:
        return bool(inner.enable_gn_hack()) if inner is not None else False
    except Exception:
        return False


#: the motion module AnimateDiff's own Model dropdown starts on when it is there (animatediff_ui.py ``render``)
PREFERRED_MOTION_MODULE = "mm_sd15_v3.safetensors"


def motion_modules() -> list[str]:
    """AnimateDiff's motion module files as its Model dropdown lists them (animatediff_ui.py ``get_model_list``: every
    file under ``mm_animatediff.get_model_dir()`` but ``.gitkeep``, relative names), SDXL ones (``xl`` in the name)
    left out as it does for an SD1.5 checkpoint. Empty when AnimateDiff or its folder is not there."""
    import os

    mm = getattr(module(), "mm_animatediff", None)
    try:
        root = mm.get_model_dir()
    except Exception:
        return []
    if not root or not os.path.isdir(root):
        return []
    return sorted(os.path.relpath(os.path.join(folder, name), root) for folder, _dirs, names in os.walk(root)
                  for name in names if name != ".gitkeep" and "xl" not in name)


def default_motion_module(choices: list[str]) -> str | None:
    return PREFERRED_MOTION_MODULE if PREFERRED_MOTION_MODULE in choices else (choices[0] if choices else None)
