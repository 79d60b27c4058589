"""The AlwaysOn ``Script``: UI in txt2img/img2img, args in, a ``GuidedRun`` per generation."""

from __future__ import annotations

import logging

from modules import scripts

from . import amortized, animatediff
from . import run as runs
from .args import INFOTEXT_KEY, XYZ_ATTR, MotionPromptArgs

log = logging.getLogger("motionprompt")

#: attribute XYZ axes write their overrides into (a dict, replaced on every apply: p is shallow-copied per cell)


class MotionPromptScript(scripts.Script):
    sorting_priority = 15  # Forge orders AlwaysOn scripts by it; A1111 ignores it

    def __init__(self):
        super().__init__()
        self.run: runs.GuidedRun | None = None
        self.args: MotionPromptArgs | None = None  # this job's values, also when MotionPrompt is off

    def title(self):
        return "MotionPrompt"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        """Side-effect free and re-entrant: the API calls it again to read default values."""
        from . import ui, widgets

        tab = "img2img" if is_img2img else "txt2img"
        controls, infotext = ui.build(tab, widgets.list_discriminators, widgets.refresh_button, widgets.accordion,
                                      widgets.status_line(), widgets.default_discriminator)
        self.infotext_fields = infotext
        self.paste_field_names = [f"{INFOTEXT_KEY} {n}" for n in MotionPromptArgs.field_names() if n != "enabled"]
        return controls

    # ------------------------------------------------------------------ per generation
    def process(self, p, *args):
        if self.run is not None:  # the last job raised before postprocess (A1111 has no finally there)
            self.run.finish()
        self.run, self.args = None, None
        try:
            margs = MotionPromptArgs.from_script_args(args).with_overrides(getattr(p, XYZ_ATTR, None))
        except ValueError as exc:
            if args and (args[0] is True or (isinstance(args[0], dict) and args[0].get("enabled"))):
                runs.report(p, f"not applied: {exc}")
            return
        self.args = margs
        if margs.enabled:  # issue 15: the amortized-token mode has its own run (no inner loop, no discriminator)
            self.run = (amortized.start if margs.mode == "amortized" else runs.start)(p, margs)

    def process_batch(self, p, *args, **kwargs):
        if self.run is not None and self.run.p is p:
            self.run.begin_batch(kwargs.get("seeds"))

    def postprocess_batch(self, p, *args, **kwargs):
        sink = getattr(p, "motionprompt_frames", None)  # the tab's clip maker takes the video's frames
        if sink is not None:
            sink.append(runs.video_frames(kwargs.get("images"), animatediff.state()))
        if self.run is not None and self.run.p is p:
            self.run.end_batch(kwargs.get("images"))
        elif self.args is not None and not self.args.enabled:
            runs.measure_unguided(p, self.args, kwargs.get("images"))

    def postprocess(self, p, processed, *args):
        if self.run is not None:
            self.run.finish()
            self.run = None
