"""What guidance did to this clip: weight-free temporal metrics of the result and a small HTML report.

The report (one file per video, beside AnimateDiff's outputs) holds the per-step loss curve as an
inline SVG, so it needs nothing but a browser; the infotext carries the one-line metric summary.
"""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path

import numpy as np

from ...engine.records import json_safe
from ...files.atomic import write_json, write_text

METRICS_KEY = "MotionPrompt metrics"


def frames_from_images(images) -> np.ndarray:
    """A1111's postprocess_batch images: float [B, 3, H, W] in [0, 1] -> uint8 [B, H, W, 3]."""
    x = images.detach().float().clamp(0, 1).cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    return (x.transpose(0, 2, 3, 1) * 255.0 + 0.5).astype(np.uint8)


def clip_metrics(frames: np.ndarray, disc=None, flow=None, fps: float | None = None, device="cpu") -> dict:
    from ...evaluation.metrics import disc_score, video_metrics

    out = video_metrics(frames, fps=fps, short_side=256)
    if disc is not None and flow is not None:
        out["disc_score"] = disc_score(frames, disc, flow=flow, device=str(device))
    return out


def metrics_text(m: dict) -> str:
    parts = [f"warp error {m['warp_error']:.2f}", f"flicker {m['flicker']:.4f}", f"smoothness {m['smoothness']:.4f}",
             f"motion {m['motion_px']:.2f} px"]
    if m.get("disc_score") is not None:
        parts.append(f"D {m['disc_score']:.3f}")
    return "; ".join(parts)


def _svg_curve(records: list[dict], width: int = 420, height: int = 140) -> str:
    """Discriminator loss per inner iteration, one polyline per guided step (x: iteration index overall)."""
    points = [(s["step"], it["disc"]) for s in records for it in s.get("iterations", []) if math.isfinite(it["disc"])]
    if not points:
        return "<p>(no guided step)</p>"
    ys = [y for _, y in points]
    lo, hi = min(ys), max(ys)
    span = (hi - lo) or 1.0
    pad = 10

    def xy(k: int, y: float) -> str:
        x = pad + k * (width - 2 * pad) / max(1, len(points) - 1)
        return f"{x:.1f},{height - pad - (y - lo) / span * (height - 2 * pad):.1f}"

    lines, k = [], 0
    for s in records:
        its = [it for it in s.get("iterations", []) if math.isfinite(it["disc"])]  # skipped iterations hold NaN
        if its:
            lines.append("<polyline fill='none' stroke='currentColor' points='"
                         + " ".join(xy(k + i, it["disc"]) for i, it in enumerate(its)) + "'/>")
            k += len(its)
    return (f"<svg width='{width}' height='{height + 14}' role='img' aria-label='discriminator loss per iteration'>"
            f"{''.join(lines)}<text x='{pad}' y='{pad}' font-size='10'>{hi:.4f}</text>"
            f"<text x='{pad}' y='{height - 2}' font-size='10'>{lo:.4f}</text>"
            f"<text x='{width - pad}' y='{pad}' font-size='10' text-anchor='end'>y: discriminator loss term</text>"
            f"<text x='{width / 2:.0f}' y='{height + 11}' font-size='10' text-anchor='middle'>x: inner iteration, "
            f"guided steps in order (one line per step)</text></svg>")


def write_report(folder: str | Path, name: str, summary: dict, records: list[dict], metrics: dict | None,
                 settings: dict) -> Path:
    """``<folder>/<name>.html`` + ``.json`` (same content, for scripts); written whole or not at all."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in {**summary, **(metrics or {})}.items() if k not in ("notes",))
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in summary.get("notes", []))
    page = (f"<!doctype html><meta charset='utf-8'><title>MotionPrompt {html.escape(name)}</title>"
            f"<div class='motionprompt-report'><h3>MotionPrompt guidance — {html.escape(name)}</h3>"
            f"<p>{time.strftime('%Y-%m-%d %H:%M:%S')}</p>{_svg_curve(records)}"
            f"<table>{rows}</table><ul>{notes}</ul>"
            f"<details><summary>settings</summary><pre>{html.escape(json.dumps(settings, indent=1))}</pre></details></div>")
    out = write_text(folder / f"{name}.html", page)
    write_json(folder / f"{name}.json", json_safe({"summary": summary, "metrics": metrics, "steps": records,
                                                    "settings": settings}), indent=1)
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
