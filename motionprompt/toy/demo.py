"""``make demo`` on the shipped toy model: plain vs guided from the same seeds, with flow and numbers.

A small ``evaluate`` run (held-out prompts, one seed each, the shipped guiding and independent
discriminators) of the two ways to guide: the shipped amortized token (learned once, no inner loop: the
arm that passed the toy evaluation) and the paper's per-sample optimization. One animated side-by-side
per prompt: plain | amortized | paper frames on top, their DIS flow colour maps (one speed scale) below.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import numpy as np

WEIGHTS = Path(__file__).with_name("weights")
GUIDE_D = WEIGHTS / "disc_guide.safetensors"
INDEPENDENT_D = WEIGHTS / "disc_independent.safetensors"
MOTION_TOKEN = WEIGHTS / "mp_motion.safetensors"  # token-train on the guiding split, README "Amortized token"


def shipped_files() -> dict[str, Path]:
    from .model import SHIPPED

    return {"toy model": SHIPPED, "guiding discriminator": GUIDE_D, "independent discriminator": INDEPENDENT_D,
            "amortized motion token": MOTION_TOKEN}


def side_by_side(*clips: np.ndarray, zoom: int = 4) -> np.ndarray:
    """[F, H, W, 3] x N -> one clip: frames on top, flow colour maps (t -> t+1, one scale for all) below."""
    from ..flow.colours import flow_to_rgb
    from ..flow.dis import dis_flow

    flows = [[dis_flow(np.kron(c[i], np.ones((2, 2, 1), np.uint8)), np.kron(c[i + 1], np.ones((2, 2, 1), np.uint8)))
              for i in range(len(c) - 1)] for c in clips]
    scale = max(max(float(np.linalg.norm(f, axis=-1).max()) for f in fl) for fl in flows) or 1.0
    h, w = clips[0].shape[1:3]
    gap = 2 * zoom
    n = len(clips)
    out = np.full((len(clips[0]), 2 * h * zoom + gap, n * w * zoom + (n - 1) * gap, 3), 255, np.uint8)
    for col, (clip, fl) in enumerate(zip(clips, flows, strict=True)):
        x0 = col * (w * zoom + gap)
        for t in range(len(clip)):
            out[t, : h * zoom, x0 : x0 + w * zoom] = np.kron(clip[t], np.ones((zoom, zoom, 1), np.uint8))
            f = fl[min(t, len(fl) - 1)]
            rgb = flow_to_rgb(f, scale)
            rgb = np.kron(rgb, np.ones((zoom // 2, zoom // 2, 1), np.uint8)) if zoom >= 2 else rgb
            out[t, h * zoom + gap :, x0 : x0 + w * zoom] = rgb[: h * zoom, : w * zoom]
    return out


def run_toy_demo(out: str | Path = "outputs/demo", prompts: int = 4, steps: int = 25, cfg_scale: float = 5.0,
                 log=print) -> dict:
    from ..evaluation.evaluate import Arm, Evaluation, format_summary, token_arms
    from ..files.video import load_gif, save_gif

    missing = [f"{name} ({path})" for name, path in shipped_files().items() if not path.is_file()]
    if missing:
        raise SystemExit("the demo needs the shipped toy weights; missing: " + ", ".join(missing))
    out = Path(out)
    t0 = time.perf_counter()
    log(f"toy model, discriminators and motion token from {WEIGHTS}; {prompts} held-out prompt(s), plain vs "
        "the amortized token (no inner loop) vs the paper's per-sample optimization")
    arms = [token_arms(MOTION_TOKEN)[0], Arm.parse("paper")]
    ev = Evaluation(out, "toy", str(GUIDE_D), str(INDEPENDENT_D), arms, prompts, 1, steps, cfg_scale)
    summary = ev.run(progress=lambda n, total: log(f"  clip {n}/{total}"))
    names = []
    for i in range(min(prompts, 4)):
        gifs = [out / "clips" / f"{i:02d}_{k}.gif" for k in ("plain", *(a.name for a in arms))]
        if all(g.is_file() for g in gifs):
            name = f"side_by_side_{i:02d}.gif"
            save_gif(side_by_side(*(load_gif(g) for g in gifs)), out / name, fps=6)
            names.append(name)
    prompts_used = sorted({r["prompt"] for r in ev.rows})
    report = (out / "report.html").read_text(encoding="utf-8")
    intro = ("<h2>Same seed: plain | amortized token | paper (per sample)</h2><p>Top: frames; bottom: DIS flow "
             "t&rarr;t+1 (hue = direction, saturation = speed, one scale per prompt). The amortized token was "
             "learned once on other captions and costs nothing at sampling time; the paper's optimization runs "
             "3 gradient iterations per guided step. A few pairs show what each does, not a statistic: the 72-pair "
             "results are in the README's Toy-world results. Prompts: " + "; ".join(html.escape(p) for p in prompts_used)
             + "</p>" + "".join(f"<img src='{n}' width=400> " for n in names))
    from ..files.atomic import write_text

    write_text(out / "report.html", report.replace("<h2>", intro + "<h2>", 1))
    log(format_summary(summary))
    log(f"wrote {out}/report.html ({time.perf_counter() - t0:.0f} s)")
    return summary
