"""``python -m motionprompt toy-disc``: the paper's discriminator protocol in the toy world.

Real clips of the world vs the toy model's own plain generations, for one role's captions
(``protocol.caption_split``): the guiding discriminator and the independent one see disjoint prompts,
real clips and sampling seeds, and train with different seeds. Clips are written as PNG frame folders
(lossless: a GIF palette would mark generated clips by their quantisation), then our ordinary trainer
runs on them, so the result is exactly what ``python -m motionprompt train --real R --fake F`` gives.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..engine.config import FlowSettings
from .protocol import ROLES, caption_split, seeds

ROLE_SEED = {"guide": 0, "independent": 1}
TOY_FLOW = FlowSettings(backend="lk_pyramid", size=64, iters=6)  # 32-px clips, flow on 2x upscales


def _write_frames(clip: np.ndarray, folder: Path) -> None:
    from PIL import Image

    from ..files.atomic import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(clip):
        atomic_write(folder / f"{i:02d}.png", lambda tmp, f=frame: Image.fromarray(f).save(tmp, format="PNG"))


def _complete(folder: Path, frames: int) -> bool:
    return folder.is_dir() and len(list(folder.glob("*.png"))) == frames


def write_role_data(model_path: str, role: str, out: Path, per_prompt: int, steps: int, cfg_scale: float,
                    log=print) -> tuple[Path, Path]:
    """Real and generated clips of one role, resumable (complete clip folders are kept)."""
    from .model import load_model, model_file
    from .sample import real_clip, sample_many

    prompts = caption_split()[role]
    parts = load_model(model_file(model_path))
    size, frames = parts.arch.size, parts.arch.frames
    real_dir, fake_dir = out / role / "real", out / role / "fake"
    jobs = [(p, k) for p in prompts for k in range(per_prompt)]
    real_seeds, fake_seeds = seeds(f"{role}_real", len(jobs)), seeds(f"{role}_fake", len(jobs))
    for (p, k), s in zip(jobs, real_seeds, strict=True):
        folder = real_dir / f"{prompts.index(p):02d}_{k}"
        if not _complete(folder, frames):
            _write_frames(real_clip(p, s, size=size), folder)
    todo = [(i, p, k) for i, (p, k) in enumerate(jobs) if not _complete(fake_dir / f"{prompts.index(p):02d}_{k}", frames)]
    if todo:
        log(f"{role}: sampling {len(todo)} clip(s) of the toy model ({steps} steps, cfg {cfg_scale})")
        for b in range(0, len(todo), 8):
            chunk = todo[b : b + 8]
            clips = sample_many(parts, [p for _, p, _ in chunk], [fake_seeds[i] for i, _, _ in chunk], steps=steps,
                                cfg_scale=cfg_scale)
            for (_, p, k), c in zip(chunk, clips, strict=True):
                _write_frames(c, fake_dir / f"{prompts.index(p):02d}_{k}")
    return real_dir, fake_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="toy", help='"toy" (shipped) or a toy model .safetensors')
    p.add_argument("--role", default="guide", choices=ROLES, help="which caption split (and seeds) to use")
    p.add_argument("--data", default="outputs/toy-disc", help="folder for the real/generated PNG clips")
    p.add_argument("--out", help="discriminator to write (default <data>/<role>.safetensors)")
    p.add_argument("--per-prompt", type=int, default=4, help="real and generated clips per caption")
    p.add_argument("--sample-steps", type=int, default=25)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--steps", type=int, default=1500, help="discriminator training steps")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--overwrite", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m motionprompt toy-disc")
    add_arguments(p)
    return p


def run(args) -> int:
    from ..cli.train import ProgressPrinter
    from ..training.dataset import DataError
    from ..training.trainer import TrainConfig, TrainError, train_discriminator

    data = Path(args.data)
    out = args.out or str(data / f"{args.role}.safetensors")
    try:
        real, fake = write_role_data(args.model, args.role, data, args.per_prompt, args.sample_steps, args.cfg,
                                     log=lambda m: print(m, file=sys.stderr, flush=True))
        seed = ROLE_SEED[args.role]
        cfg = TrainConfig(real=[str(real)], fake=[str(fake)], out=out, flow=TOY_FLOW, steps=args.steps, seed=seed,
                          data_seed=seed, resume=args.resume, overwrite=args.overwrite)
        print(f"same as: python -m motionprompt train --real {real} --fake {fake} --flow-backend {TOY_FLOW.backend} "
              f"--flow-size {TOY_FLOW.size} --flow-iters {TOY_FLOW.iters} --steps {args.steps} --seed {seed} "
              f"--data-seed {seed} --out {out}", file=sys.stderr)
        printer = ProgressPrinter()
        result = train_discriminator(cfg, progress=printer, log=lambda m: print(m, file=sys.stderr, flush=True))
        printer.close()
    except (TrainError, DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = result.metrics
    print(f"{args.role} discriminator: {out}; held-out accuracy {m.get('acc', float('nan')):.3f}, "
          f"ROC AUC {m.get('auc', float('nan')):.3f} at step {result.step}")
    return 0
