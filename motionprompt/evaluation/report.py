"""``report.html`` of an evaluation: the paired table, a plot of per-sample differences, example clips.

Plots use ``matplotlib.figure.Figure`` directly (no pyplot global state, safe in worker threads);
matplotlib is a gradio dependency, so every WebUI venv has it.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from .measures import METRICS


def _diff_figure(rows: list[dict], arms: list[str]) -> bytes:
    from matplotlib.figure import Figure

    from ..files.plots import png_bytes

    by_key = {(r["prompt"], r["seed"], r["arm"]): r for r in rows}
    metrics = [m for m in METRICS if m != "colour_purity"]
    fig = Figure(figsize=(2.2 * len(metrics), 2.8), dpi=100)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, m in zip(axes, metrics, strict=True):
        data = []
        for arm in arms:
            d = []
            for (p, s, a), r in by_key.items():
                if a == arm and (p, s, "plain") in by_key:
                    x, y = by_key[(p, s, "plain")]["metrics"].get(m), r["metrics"].get(m)
                    if x is not None and y is not None and np.isfinite(float(x)) and np.isfinite(float(y)):
                        d.append(float(y) - float(x))
            data.append(d)
        for k, d in enumerate(data):
            if d:
                jitter = np.random.default_rng(k).uniform(-0.15, 0.15, len(d))
                ax.scatter(np.full(len(d), k) + jitter, d, s=6, alpha=0.5)
                ax.plot([k - 0.3, k + 0.3], [np.mean(d)] * 2, color="black", lw=2)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(arms)))
        ax.set_xticklabels(arms, rotation=45, fontsize=7)
        side = {True: "higher better", False: "lower better", None: "change"}[METRICS[m]]
        ax.set_title(f"{m} ({side})", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle("guided - plain, per (prompt, seed); bar = mean", fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)


def write_report(out: Path, summary: dict, rows: list[dict]) -> Path:
    from ..files.atomic import atomic_write, write_text

    out = Path(out)
    arms = list(summary["arms"])
    png = _diff_figure(rows, arms) if rows and arms else b""
    if png:
        atomic_write(out / "differences.png", lambda tmp: Path(tmp).write_bytes(png))
    parts = ["<!doctype html><meta charset='utf-8'><title>MotionPrompt evaluation</title>",
             "<style>body{font-family:sans-serif;max-width:1200px}td,th{padding:2px 8px;text-align:right}"
             "th{background:#eee}img{image-rendering:pixelated}</style>",
             f"<h1>MotionPrompt evaluation</h1><p>{summary['pairs']} paired (prompt, seed) samples on held-out "
             f"prompts. Setup: <code>{html.escape(str(summary.get('setup')))}</code></p>"]
    for arm, e in summary["arms"].items():
        parts.append(f"<h2>{html.escape(arm)}</h2><p>n = {e['n']}, time ×{(e['time_ratio_mean'] or 0):.2f} of plain, "
                     f"token drift {(e['token_drift_mean'] or 0):.3f}</p>")
        parts.append("<table><tr><th>metric</th><th>plain</th><th>guided</th><th>diff</th><th>95% CI</th>"
                     "<th>win rate</th><th>p (Wilcoxon)</th><th>kept vs paper</th></tr>")
        kept = e.get("kept_vs_paper", {})
        for m, s in e["metrics"].items():
            if not s["n"]:
                continue
            ci = s["ci95"] or [None, None]
            diff = _f(s["diff_mean"], "+.4f")
            if METRICS.get(m, True) is None and s.get("relative") is not None:  # a change (travel): also in %
                diff += f" ({s['relative']:+.1%})"
            parts.append("<tr>" + "".join(f"<td>{v}</td>" for v in (
                m, _f(s["plain_mean"]), _f(s["guided_mean"]), diff,
                f"[{_f(ci[0], '+.4f')}, {_f(ci[1], '+.4f')}]", _f(s["win_rate"], ".2f"), _f(s["p_value"], ".2g"),
                _f(kept.get(m), ".2f"))) + "</tr>")
        parts.append("</table>")
    if summary.get("flow_frechet_to_real"):
        parts.append("<h2>Distance to real clips</h2><p>Fréchet distance on standardised flow statistics "
                     "(lower = motion statistics closer to the world's real clips): " + ", ".join(
                         f"{html.escape(k)} {v:.3f}" for k, v in summary["flow_frechet_to_real"].items()) + "</p>")
    if png:
        parts.append("<h2>Per-sample differences</h2><img src='differences.png' style='max-width:100%'>")
    clips = sorted((out / "clips").glob("*.gif")) if (out / "clips").is_dir() else []
    if clips:
        parts.append("<h2>Examples (first prompts, same seed per row)</h2><table>")
        for idx in sorted({c.name[:2] for c in clips}):
            row = [c for c in clips if c.name.startswith(idx)]
            parts.append("<tr>" + "".join(f"<td><img src='clips/{c.name}' width=128><br>{html.escape(c.stem[3:])}</td>"
                                          for c in row) + "</tr>")
        parts.append("</table>")
    return write_text(out / "report.html", "\n".join(parts))


def _f(v, fmt: str = ".4f") -> str:
    return "-" if v is None else format(float(v), fmt)
