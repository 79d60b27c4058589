"""Which rows the inner loop runs the UNet on, and AnimateDiff's context windows over the cond rows.

Nothing in the loss depends on the uncond rows, yet a ``[cond; uncond]`` call computes them forward and
backward in every inner iteration (a real A1111 + AnimateDiff measured ≈ 2–2.5 plain steps per
iteration). AnimateDiff's hooked forward cannot take the cond rows alone while "Batch cond/uncond" is on
(it indexes ``context + [c + video_length]``: IndexError, real_webui_checks.md §2), so we run its windows
ourselves: its own scheduler (``AnimateDiffInfV2V.uniform`` at ``ad_params.step``, so windows, overlap and
closed loop are its), each window through ``inner_model.original_forward`` (the UNet with the injected
motion module), outputs scattered the way it scatters them (a later window overwrites shared frames).

The full batch stays where the rows are not independent of the batch layout:
* V1/HotShot motion modules patch GroupNorm to normalise over ``b=2`` halves of every call;
* ControlNet slices its hints with the 2·B index of each window (and runs its encoder without gradients).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import animatediff


@dataclass(frozen=True)
class UNetPath:
    cond_only: bool
    why: str = ""  # why the full batch is required (empty for cond-only)

    def text(self) -> str:
        """For the infotext: which rows the inner loop ran."""
        return "cond-only UNet" if self.cond_only else f"full-batch UNet ({self.why})"


def controlnet_active(p) -> bool:
    """sd-webui-controlnet's ``find_cn_script(p.scripts)`` (title "controlnet") with a network in use."""
    runner = getattr(p, "scripts", None)
    for script in getattr(runner, "alwayson_scripts", None) or []:
        try:
            title = str(script.title()).lower()
        except Exception:
            continue
        if title == "controlnet" and getattr(script, "latest_network", None) is not None:
            return True
    return False


def choose(p, batch_cond_uncond: bool, ad: animatediff.AnimateDiffState | None) -> UNetPath:
    if not batch_cond_uncond:  # the host itself calls the UNet on the cond rows alone: so do we
        return UNetPath(True)
    if animatediff.v1_groupnorm_hack():
        return UNetPath(False, "V1/HotShot GroupNorm hack")
    if controlnet_active(p):
        return UNetPath(False, "ControlNet hint slicing")
    if ad is not None and animatediff.scheduler() is None:
        return UNetPath(False, "AnimateDiff's context scheduler not found")
    return UNetPath(True)


def cond_rows_forward(inner, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, image_cond: torch.Tensor,
                      batch_cond_uncond: bool, ad: animatediff.AnimateDiffState | None, frames=None,
                      ran: list | None = None) -> torch.Tensor:
    """The inner model on B rows (all cond or all uncond), as AnimateDiff would compute them in a 2·B call.
    ``frames``: only the windows whose output those frames get run (``animatediff.scoring_windows``); the
    other rows stay zero. ``ran`` gets the number of rows of every UNet call made."""
    hooked = getattr(inner, "original_forward", None)
    if hooked is None or not batch_cond_uncond or ad is None:
        # no hook, or "Batch cond/uncond" off: the hooked forward itself takes B rows (the host's own calls)
        if ran is not None and (ad is None or frames is None):
            ran.append(x.shape[0])
        with animatediff.only_windows(frames if ad is not None else None, ran):
            return inner(x, sigma, cond={"c_crossattn": [cond], "c_concat": [image_cond]})
    uniform = animatediff.scheduler()
    ap = ad.params
    out = torch.zeros_like(x)
    windows = list(uniform(ap.step, ap.video_length, ap.batch_size, ap.stride, ap.overlap, ap.closed_loop))
    if frames is not None:
        windows = animatediff.scoring_windows(windows, frames)
    if ran is not None:
        ran.extend(len(w) for w in windows)
    for context in windows:
        part = hooked(x[context], sigma[context], cond={"c_crossattn": [cond[context]],
                                                        "c_concat": [image_cond[context]]})
        out = out.to(dtype=part.dtype)
        out[context] = part
    return out
