"""One guided generation inside the WebUI: the run's lifecycle, the CFG callback and the injection.

The module-level ``on_cfg_denoiser`` is registered once; it does nothing unless a ``GuidedRun`` was
started for the very ``p`` being sampled (txt2img and img2img each have a Script instance, callbacks
fire for both). Nothing here raises into the host: a failure stops guidance, restores AnimateDiff's
conditioning and is reported once; sampling finishes unguided.

The host's sampling path (A1111's wrappers or Forge's ldm_patched) is a ``path`` object: ``host.A1111Path`` or
``forge.ForgePath``. The callback always leaves ``torch.inference_mode`` (Forge samples in it; on A1111 it is a
no-op), so tokens, conditioning and graphs are ordinary tensors.
"""

from __future__ import annotations

import gc
import logging

import torch

from ...amortized.token_file import start_tokens
from ...disc.checkpoint import CheckpointError, Discriminator
from ...engine import schedule
from ...engine.guidance import MotionGuide
from ...engine.same_pairs import SamePairsProbe
from . import animatediff, flavour
from .args import MotionPromptArgs
from .forge import ForgePath
from .host import A1111Path
from .injection import CondInjection
from .outcome import Costs, RunOutcome, clock, measure_unguided, peak_rss, report, video_frames
from .preflight import GuidanceUnavailable, build_run_flow, clear_cache, host_problem, load_disc
from .tokens import TokenBudgetError, build_encoder

__all__ = ["GuidanceUnavailable", "GuidedRun", "build_run_flow", "clear", "host_problem", "load_disc",
           "measure_unguided", "on_cfg_denoiser", "peak_rss", "report", "start", "video_frames"]

log = logging.getLogger("motionprompt")

_RUNS: list[GuidedRun] = []


def sampling_path(sd_model):
    """The host's sampling path for this model (``flavour.kind``; unsupported Forge never gets here)."""
    return ForgePath() if flavour.kind(sd_model) == flavour.FORGE else A1111Path()


def start(p, args: MotionPromptArgs) -> GuidedRun | None:
    """Called from ``Script.process``. Returns the run, or None after reporting why it cannot run."""
    from modules import devices

    t0 = clock()  # the job's time starts here: the set-up below is MotionPrompt's, the rest until the clip the host's
    p.extra_generation_params["MotionPrompt"] = args.to_infotext()
    try:
        problem = host_problem(p)
        if problem:
            raise GuidanceUnavailable(problem)
        disc = load_disc(args, devices.device)
        seeds = getattr(p, "all_seeds", None) or [0]  # p.seed may still be -1; all_seeds are resolved
        cfg, flow_notes = args.engine_config(int(seeds[0]), disc.flow)
        disc.check_flow(cfg.flow)
        flow = build_run_flow(cfg, devices.device)
    except (GuidanceUnavailable, CheckpointError, ValueError) as exc:
        report(p, f"not applied: {exc}")
        return None
    from .widgets import remember_discriminator

    remember_discriminator(args.discriminator)
    run = GuidedRun(p, args, cfg, disc, flow)
    run.costs = Costs(t0)
    run.costs.setup = clock() - t0
    run.flow_notes = flow_notes
    for note in flow_notes:
        log.warning("MotionPrompt: %s", note)
    _RUNS.append(run)
    return run


def on_cfg_denoiser(params) -> None:
    den = getattr(params, "denoiser", None)
    p = getattr(den, "p", None)
    for run in _RUNS:
        if run.p is p:
            run.on_denoiser(params)
            return


def _sampler_steps(den) -> int:
    """The user's step count (``total_steps`` counts a 2nd-order sampler's two calls per step)."""
    return getattr(den, "steps", None) or den.total_steps


def clear() -> None:
    """Script reload / unload: drop every run and give AnimateDiff its own conditioning back."""
    for run in list(_RUNS):
        run.finish()
    clear_cache()


class GuidedRun(RunOutcome):
    def __init__(self, p, args: MotionPromptArgs, cfg, disc: Discriminator, flow):
        self.p, self.args, self.cfg, self.disc, self.flow = p, args, cfg, disc, flow
        self.costs = Costs()  # what this batch's time figure comes from (``start`` gives it the job's start)
        self.path = sampling_path(p.sd_model)
        self.guides: list[MotionGuide] = []
        self.probes: list[SamePairsProbe] = []
        self.problem: str | None = None
        self.notes: list[str] = []
        self.flow_notes: list[str] = []
        self.paths: list[str] = []  # which UNet rows the inner loop ran (cond-only / full batch and why)
        self._rss_start: int | None = None
        self._denoiser = None
        self._encoder = None
        self._virtual = -1
        self._cond: torch.Tensor | None = None
        self._injection = CondInjection()
        self._mem_plain: int | None = None

    # ------------------------------------------------------------------ per batch
    def begin_batch(self, seeds=None) -> None:
        if self.args.seed < 0 and seeds:  # pair seed follows each video's own seed
            self.cfg.seed = int(seeds[0])
        self.guides, self.probes, self.problem, self.notes = [], [], None, list(self.flow_notes)
        self.paths = []
        self._rss_start = None
        self._denoiser, self._virtual, self._cond, self._mem_plain = None, -1, None, None
        self.costs.begin()

    def end_batch(self, images=None) -> str:
        self._restore(None)
        self.costs.stop()
        metrics = self._measure_clip(images)  # before the result line, which says what it cost
        text = self.result_text()
        report(self.p, text)
        if metrics is not None:
            self._report_clip(metrics)
        self._free()
        self.costs.next_batch()
        return text

    def finish(self) -> None:
        self._restore(None)
        if self in _RUNS:
            _RUNS.remove(self)
        self._free()

    # ------------------------------------------------------------------ the callback
    def on_denoiser(self, params) -> None:
        with self.costs.spend():  # all of it is MotionPrompt's time, never the host's plain sampling
            if self.problem or getattr(self.p, "is_hr_pass", False):
                self._restore(params)  # guidance off: AnimateDiff's own conditioning, whatever the order
                return
            try:
                with torch.inference_mode(False):  # Forge samples in inference mode; A1111: nothing to leave
                    self._on_denoiser(params)
            except GuidanceUnavailable as exc:
                self._stop(str(exc))
                self._restore(params)
            except Exception as exc:  # never break the user's generation
                self._stop(f"{type(exc).__name__}: {exc}")
                self._restore(params)

    def _on_denoiser(self, params) -> None:
        den = params.denoiser
        if den is not self._denoiser or den.step == 0:
            # a pass's set-up; on Forge, encoding the tokens may have pushed the sampling models out: loaded again here
            with self.costs.spend("setup"), self.path.step(params):
                self._new_pass(params)
                self._first_step(params)
            return
        steps = _sampler_steps(den)
        virtual = den.step * steps // max(den.total_steps, 1)  # 2nd-order samplers: 2 calls per step
        if virtual != self._virtual:
            self._virtual = virtual
            guide = self.guides[-1]
            if self._mem_plain is None and torch.cuda.is_available():
                self._mem_plain = torch.cuda.max_memory_allocated()
            if self._rss_start is None:
                self._rss_start = peak_rss()
            ad = animatediff.state()
            if ad is not None:
                # AnimateDiff picks this step's context windows from ad_params.step, which its own callback
                # sets (master: at its end; forge/master: at its start): set it first, so our UNet calls use this
                # step's windows whichever callback runs first (it sets the same value itself)
                ad.params.step = den.step
            with self.path.step(params):
                predict, rows = self.path.predictor(params, self.p, self.p.cfg_scale, self.cfg.x0_mode, ad)
                if rows not in self.paths:
                    self.paths.append(rows)
                self._cond = guide.conditioning(virtual, steps, predict)
            self._check_guide(guide, virtual)
        if self.problem:
            self._restore(params)
        else:
            self._inject(params, self._cond)

    def _new_pass(self, params) -> None:
        """Start of a sampling pass (a new batch, or a FreeInit iteration): fresh tokens, own cond back."""
        from modules import devices, prompt_parser, shared

        self._restore(params)
        self._denoiser, self._virtual, self._cond = params.denoiser, 0, None
        ad = animatediff.state()
        if ad is None or not self.path.injected(params, ad):
            raise GuidanceUnavailable("AnimateDiff is not active in this sampling pass")
        rows = params.text_uncond.shape[0]
        conds_list, host_rows = prompt_parser.reconstruct_multicond_batch(self.p.c, 0)
        if any(len(c) != 1 for c in conds_list):
            raise GuidanceUnavailable("prompts with AND are not supported")
        prompts = list(self.p.prompts)
        if len(prompts) != rows or host_rows.shape[0] != rows:
            raise GuidanceUnavailable(f"{len(prompts)} prompts for {rows} latent rows")
        if ad.windows > 1 and not self.notes:
            self.notes.append(f"{ad.video_length} frames in {ad.windows} context windows: gradients run through every window")
        try:
            encoder, note = build_encoder(self.p.sd_model.cond_stage_model, prompts, self.cfg.n_tokens, host_rows,
                                          self.args.token_level, post=ad.multi_cond)
        except TokenBudgetError as exc:
            raise GuidanceUnavailable(str(exc)) from exc
        if note and note not in self.notes:
            self.notes.append(note)
        self._encoder = encoder
        host = self.path.host(self.p.sd_model, encoder, shared.state)
        guide = MotionGuide(self.cfg, host, self.flow, self.disc, device=devices.device,
                            start_tokens=start_tokens(self.cfg))
        init_note = getattr(encoder, "note", None)
        if init_note and init_note not in self.notes:
            self.notes.append(init_note)
        probe = SamePairsProbe(guide)
        guide.observers.append(probe)
        self.guides.append(guide)
        self.probes.append(probe)

    def _first_step(self, params) -> None:
        """Step 0 (pure noise) is never optimized here: AnimateDiff hooks its UNet at that step, maybe after this
        callback. Its conditioning is the one before any optimization, as in the reference host: with a start
        token or init tokens, the prompt carries them from this step on."""
        den, guide = params.denoiser, self.guides[-1]
        steps = _sampler_steps(den)
        if schedule.optimizes(self.cfg, 0, steps):
            note = "step 0 (pure noise) not optimized: AnimateDiff hooks its UNet there"
            if note not in self.notes:
                self.notes.append(note)
        cond = guide.start_conditioning()
        if cond is None:
            return
        rows = lambda: self._encoder.encode(guide.tokens0.to(cond.device, cond.dtype), post=False)  # noqa: E731
        self._injection.put(params, cond, rows, first=True)

    def _check_guide(self, guide: MotionGuide, step: int) -> None:
        if guide.disabled:
            self._stop(guide.disabled)
            return
        rec = guide.records[-1] if guide.records and guide.records[-1].step == step else None
        if rec and rec.iterations and all(it.grad_norm == 0 and not it.skipped for it in rec.iterations):
            self._stop("no gradient reached the tokens (an extension running the UNet under no_grad, e.g. ControlNet?)")

    # ------------------------------------------------------------------ injection
    def _inject(self, params, cond: torch.Tensor | None) -> None:
        if cond is None:
            self._restore(params)
        else:
            self._injection.put(params, cond)

    def _restore(self, params) -> None:
        self._injection.restore(params)

    def _stop(self, reason: str) -> None:
        if self.problem is None:
            self.problem = reason if " at step " in reason else f"{reason} (at step {max(self._virtual, 0)})"
            log.warning("MotionPrompt guidance stopped, sampling continues without it: %s", self.problem)
        self._free()

    def _free(self) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
