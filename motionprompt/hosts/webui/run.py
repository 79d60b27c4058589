"""One guided generation inside the WebUI: pre-flight checks, the CFG callback, injection, summary.

The module-level ``on_cfg_denoiser`` is registered once; it does nothing unless a ``GuidedRun`` was
started for the very ``p`` being sampled (txt2img and img2img each have a Script instance, callbacks
fire for both). Nothing here raises into the host: a failure stops guidance, restores AnimateDiff's
conditioning and is reported once; sampling finishes unguided.
"""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path

import torch

from ...disc.checkpoint import CheckpointError, Discriminator, load_discriminator
from ...engine.guidance import MotionGuide
from ...engine.same_pairs import SamePairsProbe
from ...flow.registry import FlowWeightsMissing, build_flow
from . import animatediff, paths
from .args import RESULT_KEY, MotionPromptArgs
from .host import WebUIHost, predictor
from .tokens import TokenBudgetError, build_encoder
from .unet_path import choose as choose_path

log = logging.getLogger("motionprompt")

_RUNS: list[GuidedRun] = []
_MODEL_CACHE: dict[str, tuple] = {}


class GuidanceUnavailable(Exception):
    """A reason, for the user, why this generation runs without guidance."""


def host_problem(p) -> str | None:
    """Why this WebUI/job cannot be guided at all, or None."""
    from modules import script_callbacks, shared

    sd_model = p.sd_model
    if hasattr(sd_model, "forge_objects"):
        return "Forge is not supported for guidance (no AnimateDiff on current Forge; sampling runs in inference mode)"
    if "denoiser" not in script_callbacks.CFGDenoiserParams.__init__.__code__.co_varnames:
        return "this WebUI is older than 1.8 (its CFG callback has no denoiser); update A1111"
    if getattr(sd_model, "is_sdxl", False) or getattr(sd_model, "is_sdxl_inpaint", False):
        return "SDXL models are not supported yet (their text encoders run without gradients)"
    if getattr(sd_model, "lowvram", False) or getattr(shared.cmd_opts, "medvram", False) \
            or getattr(shared.cmd_opts, "lowvram", False):
        return "--medvram/--lowvram move the UNet off the GPU between forward and backward; start without them"
    if not animatediff.installed():
        return "sd-webui-animatediff is not installed"
    if animatediff.state() is None:
        return "AnimateDiff is off for this generation; MotionPrompt guides AnimateDiff videos"
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
            raise GuidanceUnavailable(str(exc)) from exc
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


def start(p, args: MotionPromptArgs) -> GuidedRun | None:
    """Called from ``Script.process``. Returns the run, or None after reporting why it cannot run."""
    from modules import devices

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
    run.flow_notes = flow_notes
    for note in flow_notes:
        log.warning("MotionPrompt: %s", note)
    _RUNS.append(run)
    return run


def video_frames(images, ad) -> object:
    """The frames of this batch the user gets: AnimateDiff keeps the first ``video_length`` of the
    ``max(video_length, context)`` it samples (animatediff_output.py ``output``)."""
    if images is None or ad is None or not ad.video_length:
        return images
    return images[: ad.video_length]


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def measure_unguided(p, args: MotionPromptArgs | None, images) -> None:
    """MotionPrompt off, but an XYZ MotionPrompt axis is on this job (or the setting asks): measure the plain
    clip exactly like a guided one, with the selected discriminator when there is one, so an off/on A/B
    compares like with like."""
    from modules import devices, shared

    from .report import METRICS_KEY, clip_metrics, frames_from_images, metrics_text

    wanted = getattr(p, "motionprompt_xyz", None) is not None or shared.opts.data.get("motionprompt_report_unguided")
    ad = animatediff.state()
    if not wanted or ad is None or images is None:
        return
    try:
        disc = flow = None
        if args is not None and args.discriminator:
            try:
                disc = load_disc(args, devices.device)
                flow = build_run_flow(args.engine_config(0, disc.flow)[0], devices.device)
            except (GuidanceUnavailable, CheckpointError, ValueError) as exc:
                log.info("MotionPrompt: unguided clip measured without D score (%s)", exc)
                disc = flow = None
        fps = float(getattr(ad.params, "fps", 8) or 8)
        metrics = clip_metrics(frames_from_images(video_frames(images, ad)), disc, flow, fps, devices.device)
        p.extra_generation_params[METRICS_KEY] = metrics_text(metrics) + "; unguided"
        log.info("MotionPrompt (off): %s", metrics_text(metrics))
    except Exception as exc:  # a measurement must never cost the user the video
        log.warning("MotionPrompt: could not measure the unguided clip: %s", exc)


def report(p, text: str) -> None:
    """One line to the console, the infotext (carried into PNG/GIF/MP4) and the HTML info box."""
    level = logging.WARNING if text.startswith("not applied") or "stopped:" in text else logging.INFO
    log.log(level, "MotionPrompt: %s", text)
    p.extra_generation_params[RESULT_KEY] = text.replace(",", ";")
    comment = getattr(p, "comment", None)
    if callable(comment):
        comment(f"MotionPrompt: {text}")


def on_cfg_denoiser(params) -> None:
    den = getattr(params, "denoiser", None)
    p = getattr(den, "p", None)
    for run in _RUNS:
        if run.p is p:
            run.on_denoiser(params)
            return


def clear() -> None:
    """Script reload / unload: drop every run and give AnimateDiff its own conditioning back."""
    for run in list(_RUNS):
        run.finish()
    _MODEL_CACHE.clear()


class GuidedRun:
    def __init__(self, p, args: MotionPromptArgs, cfg, disc: Discriminator, flow):
        self.p, self.args, self.cfg, self.disc, self.flow = p, args, cfg, disc, flow
        self.guides: list[MotionGuide] = []
        self.probes: list[SamePairsProbe] = []
        self.problem: str | None = None
        self.notes: list[str] = []
        self.flow_notes: list[str] = []
        self.paths: list[str] = []  # which UNet rows the inner loop ran (cond-only / full batch and why)
        self._rss_start: int | None = None
        self._denoiser = None
        self._virtual = -1
        self._cond: torch.Tensor | None = None
        self._original = None
        self._injected = False
        self._t_start: float | None = None
        self._mem_plain: int | None = None

    # ------------------------------------------------------------------ per batch
    def begin_batch(self, seeds=None) -> None:
        if self.args.seed < 0 and seeds:  # pair seed follows each video's own seed
            self.cfg.seed = int(seeds[0])
        self.guides, self.probes, self.problem, self.notes = [], [], None, list(self.flow_notes)
        self.paths = []
        self._rss_start = None
        self._denoiser, self._virtual, self._cond, self._t_start, self._mem_plain = None, -1, None, None, None

    def end_batch(self, images=None) -> str:
        self._restore(None)
        text = self.result_text()
        report(self.p, text)
        if images is not None and self.guides:
            self._report_clip(images)
        self._free()
        return text

    def _report_clip(self, images) -> None:
        """Metrics of the finished clip into the infotext, and the HTML/JSON report beside the outputs."""
        from modules import devices, shared

        from .report import METRICS_KEY, clip_metrics, frames_from_images, metrics_text, write_report

        if not shared.opts.data.get("motionprompt_report", True):
            return
        try:
            ad = animatediff.state()
            fps = float(getattr(ad.params, "fps", 8) or 8) if ad else None
            metrics = clip_metrics(frames_from_images(video_frames(images, ad)), self.disc, self.flow, fps,
                                   devices.device)
            self.p.extra_generation_params[METRICS_KEY] = metrics_text(metrics)
            records = [r.to_dict() for g in self.guides for r in g.records]
            seed = (self.p.seeds or [0])[0] if getattr(self.p, "seeds", None) else 0
            folder = Path(getattr(self.p, "outpath_samples", None) or "outputs") / "MotionPrompt"
            path = write_report(folder, f"{time.strftime('%Y%m%d-%H%M%S')}-{seed}", self.summary(), records, metrics,
                                self.cfg.to_dict())
            comment = getattr(self.p, "comment", None)
            if callable(comment):
                comment(f"MotionPrompt: {metrics_text(metrics)}; report {path}")
            log.info("MotionPrompt: %s; report %s", metrics_text(metrics), path)
        except Exception as exc:  # a report must never cost the user the video
            log.warning("MotionPrompt: could not measure the clip: %s", exc)

    def finish(self) -> None:
        self._restore(None)
        if self in _RUNS:
            _RUNS.remove(self)
        self._free()

    # ------------------------------------------------------------------ the callback
    def on_denoiser(self, params) -> None:
        if self.problem or getattr(self.p, "is_hr_pass", False):
            self._restore(params)  # guidance off: AnimateDiff's own conditioning, whatever the order
            return
        den = params.denoiser
        try:
            if den is not self._denoiser or den.step == 0:
                self._new_pass(params)
                return  # step 0 is pure noise, and AnimateDiff builds its conditioning there
            steps = getattr(den, "steps", None) or den.total_steps
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
                    # AnimateDiff picks this step's context windows from ad_params.step, which its own
                    # callback sets only at its end: set it first, so our UNet calls use this step's windows
                    # whichever callback runs first (it sets the same value afterwards)
                    ad.params.step = den.step
                from modules import shared

                batched = bool(shared.opts.batch_cond_uncond)
                path = choose_path(self.p, batched, ad)
                if path.text() not in self.paths:
                    self.paths.append(path.text())
                predict = predictor(params, self.p.cfg_scale, self.cfg.x0_mode, ad.video_length if ad else None,
                                    batched, path)
                self._cond = guide.conditioning(virtual, steps, predict)
                self._check_guide(guide, virtual)
            if self.problem:
                self._restore(params)
            else:
                self._inject(params, self._cond)
        except GuidanceUnavailable as exc:
            self._stop(str(exc))
            self._restore(params)
        except Exception as exc:  # never break the user's generation
            self._stop(f"{type(exc).__name__}: {exc}")
            self._restore(params)

    def _new_pass(self, params) -> None:
        """Start of a sampling pass (a new batch, or a FreeInit iteration): fresh tokens, own cond back."""
        from modules import devices, prompt_parser, shared

        self._restore(params)
        self._denoiser, self._virtual, self._cond = params.denoiser, 0, None
        if self._t_start is None:
            self._t_start = time.perf_counter()
        ad = animatediff.state()
        if ad is None or not ad.injected:
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
        host = WebUIHost(self.p.sd_model, encoder, shared.state)
        guide = MotionGuide(self.cfg, host, self.flow, self.disc, device=devices.device)
        init_note = getattr(encoder, "note", None)
        if init_note and init_note not in self.notes:
            self.notes.append(init_note)
        probe = SamePairsProbe(guide)
        guide.observers.append(probe)
        self.guides.append(guide)
        self.probes.append(probe)

    def _check_guide(self, guide: MotionGuide, step: int) -> None:
        if guide.disabled:
            self._stop(guide.disabled)
            return
        rec = guide.records[-1] if guide.records and guide.records[-1].step == step else None
        if rec and rec.iterations and all(it.grad_norm == 0 and not it.skipped for it in rec.iterations):
            self._stop("no gradient reached the tokens (an extension running the UNet under no_grad, e.g. ControlNet?)")

    # ------------------------------------------------------------------ injection
    def _inject(self, params, cond: torch.Tensor | None) -> None:
        """Write into both ``params.text_cond`` and AnimateDiff's copy: correct in either callback order."""
        if cond is None:
            self._restore(params)
            return
        ad = animatediff.state()
        if not self._injected:
            self._original = ad.text_cond if ad is not None and ad.text_cond is not None else params.text_cond
        if tuple(cond.shape) != tuple(self._original.shape):
            raise RuntimeError(f"optimized conditioning {tuple(cond.shape)} does not match the host's {tuple(self._original.shape)}")
        cond = cond.to(self._original.dtype)
        params.text_cond = cond
        if ad is not None:
            ad.text_cond = cond
        self._injected = True

    def _restore(self, params) -> None:
        if not self._injected:
            return
        ad = animatediff.state()
        if ad is not None:
            ad.text_cond = self._original
        if params is not None:
            params.text_cond = self._original
        self._injected = False

    def _stop(self, reason: str) -> None:
        if self.problem is None:
            self.problem = reason if " at step " in reason else f"{reason} (at step {max(self._virtual, 0)})"
            log.warning("MotionPrompt guidance stopped, sampling continues without it: %s", self.problem)
        self._free()

    def _free(self) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict:
        sums = [g.summary() for g in self.guides]
        firsts = [s["d_score_first"] for s in sums if s["d_score_first"] is not None]
        lasts = [s["d_score_last"] for s in sums if s["d_score_last"] is not None]
        seconds = sum(s["seconds"] for s in sums)
        total = time.perf_counter() - self._t_start if self._t_start is not None else None
        out = {
            "passes": len(self.guides),
            "steps_guided": sum(s["steps_guided"] for s in sums),
            "iterations": sum(s["iterations"] for s in sums),
            "d_score_first": sum(firsts) / len(firsts) if firsts else None,
            "d_score_last": sum(lasts) / len(lasts) if lasts else None,
            "tv_first": _mean([s["tv_first"] for s in sums]),
            "tv_last": _mean([s["tv_last"] for s in sums]),
            "guidance_seconds": seconds,
            "sampling_seconds": total,
            "time_ratio": total / (total - seconds) if total and total > seconds else None,
            "d_same_pairs_before": None,
            "d_same_pairs_after": None,
            "token_level": "output" if any("output-level" in n for n in self.notes) else "input",
            "problem": self.problem,
            "notes": list(self.notes),
            "unet_path": list(self.paths),
        }
        changes = [c for c in (probe.change() for probe in self.probes) if c is not None]
        if changes:
            out["d_same_pairs_before"] = sum(c[0] for c in changes) / len(changes)
            out["d_same_pairs_after"] = sum(c[1] for c in changes) / len(changes)
        if torch.cuda.is_available() and self._mem_plain:
            out["memory_ratio"] = torch.cuda.max_memory_allocated() / self._mem_plain
        rss = peak_rss()
        out["peak_rss_bytes"] = rss
        out["peak_rss_growth_bytes"] = rss - self._rss_start if rss is not None and self._rss_start is not None else None
        return out

    def result_text(self) -> str:
        s = self.summary()
        if not s["steps_guided"]:
            return f"not applied: {self.problem}" if self.problem else "not applied: no step fell in the guidance window"
        parts = [f"{s['steps_guided']} steps x {self.cfg.inner_iters} it"]
        if s["passes"] > 1:
            parts.append(f"{s['passes']} passes")
        if s["d_same_pairs_before"] is not None:
            before, after = s["d_same_pairs_before"], s["d_same_pairs_after"]
            parts.append(f"D(real) on the same frame pairs before->after each step {before:.3f}->{after:.3f} "
                         f"({after - before:+.4f})")
        extra = f"+{s['guidance_seconds']:.1f} s"
        if s["time_ratio"]:
            extra += f" (x{s['time_ratio']:.2f} time)"
        if s.get("memory_ratio"):
            extra += f" (x{s['memory_ratio']:.2f} peak memory)"
        elif s.get("peak_rss_growth_bytes") is not None:
            extra += f" (peak RSS +{s['peak_rss_growth_bytes'] / 2**20:.0f} MiB)"
        parts.append(extra)
        parts.append(f"{s['token_level']}-level tokens")
        parts.extend(self.paths)
        parts.extend(self.flow_notes)
        if self.problem:
            parts.append(f"stopped: {self.problem}")
        return "; ".join(parts)


def peak_rss() -> int | None:
    """The process's peak resident memory in bytes (what a CPU run costs; None where unavailable)."""
    try:
        import resource
        import sys
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
