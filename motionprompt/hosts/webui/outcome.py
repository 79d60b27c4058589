"""What the user is told about a generation: the result line, the clip's metrics and the HTML/JSON report.

``report`` writes one line to the console, the infotext and the HTML info box; ``RunOutcome`` (mixed into
``run.GuidedRun``) turns a run's records into the summary and that line; ``measure_unguided`` measures a plain
AnimateDiff clip the same way, for fair A/B comparisons.
"""

from __future__ import annotations

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
                return f"start token as it is on every step, no inner loop; {s['token_level']}-level tokens"
            return "not applied: no step fell in the guidance window"
        parts = [f"{s['steps_guided']} steps x {self.cfg.inner_iters} it"]
        if s["passes"] > 1:
            parts.append(f"{s['passes']} passes")
        if s["d_same_pairs_before"] is not None:
            rows = [r for probe in self.probes for r in probe.rows]
            parts.append("D(real) on the same frame pairs before->after each step "
                         + d_change_text(s["d_same_pairs_before"], s["d_same_pairs_after"],
                                         sum(r["after"] > r["before"] for r in rows), len(rows)))
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
        if s["memory_paths"]:
            parts.append(memory_text(s))
        parts.extend(self.flow_notes)
        if self.problem:
            parts.append(f"stopped: {self.problem}")
        return "; ".join(parts)

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

