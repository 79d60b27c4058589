"""``python -m motionprompt toy-check``: the quality gate of a toy model, before any guidance result counts.

Plain samples on every toy caption with seeds no training or evaluation uses; the ground-truth measures
(``truth.py``) say whether the prompted object is visible and moves the prompted way, and how imperfect
its motion still is (area drift, jerk, speed error) compared with real clips of the same captions.
Gate: object visible in >= 95 % of frames, prompted direction in >= 80 % of clips.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .protocol import all_captions, seeds
from .truth import clip_truth, summarize

GATE = {"visible_frames": 0.95, "direction_ok": 0.80}


def check(parts, per_caption: int = 1, steps: int = 25, cfg_scale: float = 5.0, progress=None):
    from .sample import real_clip, sample_many

    caps = [c for c in all_captions() for _ in range(per_caption)]
    sd = seeds("gate", len(caps))
    clips = sample_many(parts, caps, sd, steps=steps, cfg_scale=cfg_scale, progress=progress)
    model = summarize([clip_truth(c, p) for c, p in zip(clips, caps, strict=True)])
    real = summarize([clip_truth(real_clip(p, s, size=parts.arch.size), p) for p, s in zip(caps, sd, strict=True)])
    passed = all(model[k] >= v for k, v in GATE.items())
    return {"model": model, "real": real, "gate": GATE, "passed": passed, "steps": steps, "cfg_scale": cfg_scale}, \
        clips, caps


def sheet(clips: list[np.ndarray], captions: list[str], n: int = 8) -> np.ndarray:
    """Rows of every other frame for the first ``n`` clips (a still overview for the model card)."""
    rows = [np.concatenate(list(c[::2]), axis=1) for c in clips[:n]]
    return np.concatenate(rows, axis=0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="toy", help='"toy" (shipped) or a toy model .safetensors')
    p.add_argument("--per-caption", type=int, default=1, help="samples per caption (96 captions)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--out", default="outputs/toy-check", help="folder for gate.json and sample GIFs")
    p.add_argument("--card", action="store_true", help="also write MODEL_CARD.md, samples.gif and loss.png beside "
                   "the model file")
    p.add_argument("--train-log", help="the training CSV for the card's loss curve (toy_state.csv)")
    p.add_argument("--probe", action="store_true", help="only the direction probe: does the model predict real "
                   "clips better with their own direction word than with the opposite one? (about a minute)")


def run(args) -> int:
    from ..files.video import save_gif
    from .model import ToyModelError, load_model, model_file

    try:
        parts = load_model(model_file(args.model))
    except ToyModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.probe:
        from ..files.atomic import write_json
        from .probe import direction_probe, format_probe

        result = direction_probe(parts)
        write_json(Path(args.out) / "probe.json", result, indent=1)
        print(format_probe(result))
        return 0
    result, clips, caps = check(parts, args.per_caption, args.steps, args.cfg)
    result["model_meta"] = parts.meta
    out = Path(args.out)
    from ..files.atomic import write_json, write_text

    write_json(out / "gate.json", result, indent=1)
    from ..files.plots import save_png

    picks = list(range(0, len(clips), max(1, len(clips) // 8)))[:8]
    for i in picks:
        save_gif(clips[i], out / f"sample_{i:03d}.gif", fps=8)
    save_png(sheet([clips[i] for i in picks], [caps[i] for i in picks]), out / "sheet.png")
    write_text(out / "sheet.txt", "\n".join(caps[i] for i in picks) + "\n")
    if args.card:
        from .card import write_card

        weights_file = model_file(args.model)
        from .card import reference_stats

        write_card(weights_file.parent, parts.meta, parts.arch.to_dict(), result, [caps[i] for i in picks],
                   [clips[i] for i in picks], Path(args.train_log) if args.train_log else None)
        write_json(weights_file.parent / "reference_stats.json", reference_stats(parts), indent=1)
        write_json(weights_file.parent / "gate.json", result, indent=1)
    m, r = result["model"], result["real"]
    print(f"{m['clips']} plain samples: object visible in {m['visible_frames']:.1%} of frames (gate 95%), "
          f"prompted direction in {m['direction_ok']:.1%} of clips (gate 80%) -> {'PASS' if result['passed'] else 'FAIL'}")
    for k in ("speed_error_median", "area_cv_mean", "jerk_mean", "colour_purity"):
        print(f"  {k:<20} model {m[k] if m[k] is not None else float('nan'):.3f}   real {r[k]:.3f}")
    return 0
