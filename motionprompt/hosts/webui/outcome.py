"""What the user is told about a generation: the result line, the clip's metrics and the HTML/JSON report.

``report`` writes one line to the console, the infotext and the HTML info box; ``RunOutcome`` (mixed into
``run.GuidedRun``) turns a run's records into the summary and that line; ``measure_unguided`` measures a plain
AnimateDiff clip the same way, for fair A/B comparisons; ``Costs`` is what a batch's time figure comes from.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import torch

from ...disc.checkpoint import CheckpointError
from . import animatediff
from .args import RESULT_KEY, MotionPromptArgs
from .preflight import GuidanceUnavailable, build_run_flow, load_disc

log = logging.getLogger("motionprompt")


def report(p, text: str) -> None:
    """One line to the console, the infotext (carried into PNG/GIF/MP4) and the HTML info box."""
    level = logging.WARNING if text.startswith("not applied") or "stopped:" in text else logging.INFO
    log.log(level, "MotionPrompt: %s", text)
    p.extra_generation_params[RESULT_KEY] = text.replace(",", ";")
    comment = getattr(p, "comment", None)
    if callable(comment):
        comment(f"MotionPrompt: {text}")


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


def d_change_text(before: float, after: float, higher: int, steps: int) -> str:
    """``0.109312->0.109344 (+0.000032; higher after 9 of 11 steps)``: as many decimals as the change needs for
    two significant digits (at least 3), so a small change never reads as +0.0000, and in how many guided steps
    the optimized tokens scored the same pairs higher (the sign, step by step, apart from the size)."""
    import math

    delta = after - before
    digits = 3 if delta == 0 else min(8, max(3, 1 - math.floor(math.log10(abs(delta)))))
    change = "no change" if delta == 0 else f"{delta:+.{digits}f}" if abs(delta) >= 10**-digits else f"{delta:+.1e}"
    return (f"{before:.{digits}f}->{after:.{digits}f} ({change}; higher after {higher} of {steps} "
            f"step{'s' if steps != 1 else ''})")


def clock(sync: bool = True) -> float:
    """``time.perf_counter`` after the GPU's queued work finished (when CUDA is in use and ``sync``): a timed span
    then holds the kernels launched in it, not the host's queued before it, and none of its own is left for the host
    to wait on."""
    if sync and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


class Costs:
    """A batch's time, split between the host's own work and MotionPrompt's.

    The span runs from the job's start (``Script.process``; for later batches, the end of the previous one) to the
    decoded clip (``postprocess_batch``). MotionPrompt's time in it is what it does before sampling (``setup``:
    loading the discriminator, flow or token file; the first batch only) and everything inside its CFG callback
    (``callback``: encoding the tokens, on Forge loading the sampling models again, the guided steps with their
    probe). Plain is the rest of the span: the host's own sampling, text encoding and decode, measured around our
    work rather than from our step count, so no guided work can count as plain. The clip measurement after the
    span (``measure``) is added to the cost, said apart.

    ``sync``: whether the callback's timing waits for the GPU (guidance queues seconds of GPU work; the amortized
    mode's callback queues none worth a pause in the host's pipeline at every step)."""

    def __init__(self, t0: float | None = None, sync: bool = True):
        self.mark = clock() if t0 is None else t0
        self.sync = sync
        self.setup = 0.0
        self.begin()

    def begin(self) -> None:
        self.callback = 0.0
        self.pass_setup = 0.0  # the part of ``callback`` that starts a sampling pass (tokens, encoder, reloads)
        self.measure: float | None = None
        self.end: float | None = None

    @contextlib.contextmanager
    def spend(self, kind: str = "callback"):
        """Time a block of MotionPrompt's work: ``callback`` (the CFG callback), ``setup`` (inside the callback:
        the start of a pass, already counted in ``callback``) or ``measure`` (the clip's metrics)."""
        sync = self.sync or kind == "measure"
        t = clock(sync)
        try:
            yield
        finally:
            dt = clock(sync) - t
            if kind == "measure":
                self.measure = (self.measure or 0.0) + dt
            elif kind == "setup":
                self.pass_setup += dt
            else:
                self.callback += dt

    def stop(self) -> None:
        """The batch's clip is decoded: the span ends here."""
        self.end = clock()

    def next_batch(self) -> None:
        """The next batch's span starts now; the job's set-up was this batch's."""
        self.mark, self.setup = clock(), 0.0

    def figures(self) -> dict:
        end = self.end if self.end is not None else clock()
        ours = self.setup + self.callback
        plain = end - self.mark - ours
        extra = ours + (self.measure or 0.0)
        return {"setup_seconds": self.setup + self.pass_setup, "guidance_seconds": ours,
                "measure_seconds": self.measure, "sampling_seconds": plain,
                "time_ratio": (plain + extra) / plain if plain > 0 else None}


def _seconds(x: float) -> str:
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def cost_text(figures: dict, parts: list[tuple[str, float | None]]) -> str:
    """``+59.6 s over 18.3 s plain (x4.26 time: set-up 3.50 s + guidance 54.5 s + measuring the clip 1.60 s)``: what
    the batch cost beyond the host's own work, that work, and the ratio of the whole to it."""
    shown = [(label, s) for label, s in parts if s is not None]
    extra = sum(s for _, s in shown)
    text = f"+{_seconds(extra)} s"
    if figures["time_ratio"] is None:
        return text
    split = " + ".join(f"{label} {_seconds(s)} s" for label, s in shown)
    return f"{text} over {_seconds(figures['sampling_seconds'])} s plain (x{figures['time_ratio']:.2f} time: {split})"


def peak_rss() -> int | None:
    """The process's peak resident memory in bytes (what a CPU run costs; None where unavailable)."""
    try:
        import resource
        import sys
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class RunOutcome:
    """The summary and result line of a ``GuidedRun`` (whose attributes it reads), and the clip report."""

    def summary(self) -> dict:
        sums = [g.summary() for g in self.guides]
        firsts = [s["d_score_first"] for s in sums if s["d_score_first"] is not None]
        lasts = [s["d_score_last"] for s in sums if s["d_score_last"] is not None]
        out = {
            "passes": len(self.guides),
            "steps_guided": sum(s["steps_guided"] for s in sums),
            "iterations": sum(s["iterations"] for s in sums),
            "d_score_first": sum(firsts) / len(firsts) if firsts else None,
            "d_score_last": sum(lasts) / len(lasts) if lasts else None,
            "tv_first": _mean([s["tv_first"] for s in sums]),
            "tv_last": _mean([s["tv_last"] for s in sums]),
            # set-up + everything in the CFG callback, the host's own work, (all + the measurement) / plain (Costs)
            **self.costs.figures(),
            "inner_loop_seconds": sum(s["seconds"] for s in sums),
            "d_same_pairs_before": None,
            "d_same_pairs_after": None,
            "token_level": "output" if any("output-level" in n for n in self.notes) else "input",
            "problem": self.problem,
            "notes": list(self.notes),
            "unet_path": list(self.paths),
            "memory_paths": sorted({p for s in sums for p in s["memory_paths"]}),
            "predicted_step_bytes": _max([s["predicted_step_bytes"] for s in sums]),
            "measured_step_bytes": _max([s["measured_step_bytes"] for s in sums]),
            "kept_bytes": _max([s["kept_bytes"] for s in sums]),
            "host": self.path.label,
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
            if self.problem:
                return f"not applied: {self.problem}"
            if self.cfg.inner_iters == 0 and any(g.started for g in self.guides):  # hybrid, K = 0
                return (f"start token as it is on every step, no inner loop; {s['token_level']}-level tokens; "
                        + self.cost_text(s))
            return "not applied: no step fell in the guidance window"
        parts = [f"{s['steps_guided']} steps x {self.cfg.inner_iters} it"]
        if s["passes"] > 1:
            parts.append(f"{s['passes']} passes")
        if s["d_same_pairs_before"] is not None:
            rows = [r for probe in self.probes for r in probe.rows]
            parts.append("D(real) on the same frame pairs before->after each step "
                         + d_change_text(s["d_same_pairs_before"], s["d_same_pairs_after"],
                                         sum(r["after"] > r["before"] for r in rows), len(rows)))
        extra = self.cost_text(s)
        if s.get("memory_ratio"):
            extra += f" (x{s['memory_ratio']:.2f} peak memory)"
        elif s.get("peak_rss_growth_bytes") is not None:
            extra += f" (peak RSS +{s['peak_rss_growth_bytes'] / 2**20:.0f} MiB)"
        parts.append(extra)
        parts.append(f"{s['token_level']}-level tokens")
        parts.extend(self.paths)
        if s["memory_paths"]:
            parts.append(memory_text(s))
        parts.extend(self.flow_notes)
        if self.problem:
            parts.append(f"stopped: {self.problem}")
        return "; ".join(parts)

    def cost_text(self, s: dict) -> str:
        return cost_text(s, [("set-up", s["setup_seconds"]), ("guidance", s["guidance_seconds"] - s["setup_seconds"]),
                             ("measuring the clip", s["measure_seconds"])])

    def _measure_clip(self, images) -> dict | None:
        """The finished clip's metrics (timed: the result line adds their cost), or None when the setting is off."""
        from modules import devices, shared

        from .report import clip_metrics, frames_from_images

        if images is None or not self.guides or not shared.opts.data.get("motionprompt_report", True):
            return None
        try:
            with self.costs.spend("measure"):
                ad = animatediff.state()
                fps = float(getattr(ad.params, "fps", 8) or 8) if ad else None
                return clip_metrics(frames_from_images(video_frames(images, ad)), self.disc, self.flow, fps,
                                    devices.device)
        except Exception as exc:  # a measurement must never cost the user the video
            log.warning("MotionPrompt: could not measure the clip: %s", exc)
            return None

    def _report_clip(self, metrics: dict) -> None:
        """Metrics of the finished clip into the infotext, and the HTML/JSON report beside the outputs."""
        from .report import METRICS_KEY, metrics_text, write_report

        try:
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
            log.warning("MotionPrompt: could not write the clip's report: %s", exc)


def _max(values: list):
    values = [v for v in values if v is not None]
    return max(values) if values else None


def memory_text(s: dict) -> str:
    """Which memory path ran, and what the plan predicted against what was measured above the step's start."""
    gib = 2**30
    text = f"memory path {'/'.join(s['memory_paths'])}"
    figures = []
    if s.get("predicted_step_bytes"):
        figures.append(f"predicted {s['predicted_step_bytes'] / gib:.1f} GiB")
    if s.get("measured_step_bytes") is not None:
        figures.append(f"measured {s['measured_step_bytes'] / gib:.1f} GiB above the step's start")
    elif s.get("kept_bytes"):
        figures.append(f"{s['kept_bytes'] / gib:.2f} GiB kept for the backward")
    return f"{text} ({', '.join(figures)})" if figures else text

