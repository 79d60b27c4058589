"""``python -m motionprompt toy-disc``: the paper's discriminator protocol in the toy world.

Real clips of the world vs the toy model's own plain generations, for one role's captions
(``protocol.caption_split``): the guiding discriminator and the independent one see disjoint prompts,
real clips and sampling seeds, and train with different seeds. Clips are written as PNG frame folders
(lossless: a GIF palette would mark generated clips by their quantisation), then our ordinary trainer
runs on them, so the result is exactly what ``python -m motionprompt train --real R --fake F`` gives.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..disc.models import ARCHITECTURES
from ..flow.settings import FlowSettings
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
                    log=print, prompts: list[str] | None = None, real_seeds: list[int] | None = None,
                    fake_seeds: list[int] | None = None) -> tuple[Path, Path]:
    """Real and generated clips of one role, resumable (complete clip folders are kept).

    ``prompts``, ``real_seeds``, ``fake_seeds``: one's own cases instead of the role's captions and seed ranges
    (clip i of the real / generated side takes seed i of its list; a list needs a seed per clip at least). The
    cases are recorded in ``<out>/<role>/cases.json``: a folder holding clips of other cases is refused."""
    from ..files.atomic import write_json
    from .model import load_model, model_file
    from .sample import real_clip, sample_many

    prompts = list(prompts) if prompts is not None else caption_split()[role]
    jobs = [(p, k) for p in prompts for k in range(per_prompt)]
    real_seeds = _seeds_for(real_seeds, f"{role}_real", len(jobs), "--real-seeds")
    fake_seeds = _seeds_for(fake_seeds, f"{role}_fake", len(jobs), "--fake-seeds")
    for p in prompts:  # refuse a caption the world does not write before any clip is made
        real_clip(p, 0, size=8)
    cases = {"prompts": prompts, "per_prompt": per_prompt, "real_seeds": real_seeds, "fake_seeds": fake_seeds,
             "steps": steps, "cfg_scale": cfg_scale}
    _check_cases(out / role / "cases.json", cases)
    parts = load_model(model_file(model_path))
    size, frames = parts.arch.size, parts.arch.frames
    real_dir, fake_dir = out / role / "real", out / role / "fake"
    write_json(out / role / "cases.json", cases, indent=None)
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


def _seeds_for(given: list[int] | None, kind: str, n: int, flag: str) -> list[int]:
    if given is None:
        return seeds(kind, n)
    if len(given) < n:
        raise ValueError(f"{flag} gives {len(given)} seed(s); {n} clip(s) need one each (prompts x --per-prompt)")
    return list(given[:n])


def _check_cases(path: Path, cases: dict) -> None:
    """Clips in a data folder are kept by name: they must be the clips of these cases. A folder from before
    cases were recorded holds the role's default cases (the only ones there were)."""
    if path.is_file():
        known = json.loads(path.read_text())
        if known != cases:
            raise ValueError(f"{path.parent} holds clips of other prompts, seeds or sampler settings; choose "
                             "another --data")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="toy", help='"toy" (shipped) or a toy model .safetensors')
    p.add_argument("--role", default="guide", choices=ROLES, help="which caption split (and seeds) to use")
    p.add_argument("--data", default="outputs/toy-disc", help="folder for the real/generated PNG clips")
    p.add_argument("--out", help="discriminator to write (default <data>/<role>.safetensors)")
    p.add_argument("--per-prompt", type=int, default=4, help="real and generated clips per caption")
    p.add_argument("--sample-steps", type=int, default=25)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--steps", type=int, default=1500, help="discriminator training steps")
    own = p.add_argument_group("your own cases (defaults: the role's, as the shipped discriminators)")
    own.add_argument("--prompt-file", metavar="FILE", help="captions of the toy world, one a line, instead of the "
                     "role's split")
    own.add_argument("--real-seeds", metavar="SEEDS", help="seeds of the real clips, one per clip (prompts x "
                     "--per-prompt), e.g. 5000-5143 (default: the role's range)")
    own.add_argument("--fake-seeds", metavar="SEEDS", help="sampling seeds of the generated clips, likewise")
    own.add_argument("--train-seed", type=int, help="seed of initialisation, batches, pairs and the validation "
                     "split (train --seed and --data-seed; default: guide 0, independent 1)")
    own.add_argument("--arch", default="cnn", choices=sorted(ARCHITECTURES), help="discriminator architecture")
    own.add_argument("--width", type=int, help="cnn channel width (default: the architecture's, 32)")
    own.add_argument("--arch-config", metavar="JSON", help="other architecture settings, e.g. '{\"depth\": 3}'")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--overwrite", action="store_true")


def _arch(args) -> tuple[str, dict]:
    config = json.loads(args.arch_config) if getattr(args, "arch_config", None) else {}
    if not isinstance(config, dict):
        raise ValueError("--arch-config must be a JSON object")
    if getattr(args, "width", None) is not None:
        config["width"] = args.width
    return getattr(args, "arch", "cnn"), config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m motionprompt toy-disc")
    add_arguments(p)
    return p


def run(args) -> int:
    from ..training.dataset import DataError
    from ..training.progress import ProgressPrinter
    from ..training.trainer import TrainConfig, TrainError, train_discriminator

    data = Path(args.data)
    out = args.out or str(data / f"{args.role}.safetensors")
    try:
        from ..evaluation.cases import parse_seed_list, read_prompt_file

        own = {"prompts": read_prompt_file(args.prompt_file) if getattr(args, "prompt_file", None) else None,
               "real_seeds": parse_seed_list(args.real_seeds) if getattr(args, "real_seeds", None) else None,
               "fake_seeds": parse_seed_list(args.fake_seeds) if getattr(args, "fake_seeds", None) else None}
        arch, arch_config = _arch(args)
        real, fake = write_role_data(args.model, args.role, data, args.per_prompt, args.sample_steps, args.cfg,
                                     log=lambda m: print(m, file=sys.stderr, flush=True), **own)
        seed = ROLE_SEED[args.role] if getattr(args, "train_seed", None) is None else args.train_seed
        cfg = TrainConfig(real=[str(real)], fake=[str(fake)], out=out, flow=TOY_FLOW, steps=args.steps, seed=seed,
                          data_seed=seed, arch=arch, arch_config=arch_config, resume=args.resume,
                          overwrite=args.overwrite)
        extra = (f" --arch {arch}" if arch != "cnn" else "") + \
            (f" --arch-config '{json.dumps(arch_config)}'" if arch_config else "")
        print(f"same as: python -m motionprompt train --real {real} --fake {fake} --flow-backend {TOY_FLOW.backend} "
              f"--flow-size {TOY_FLOW.size} --flow-iters {TOY_FLOW.iters} --steps {args.steps} --seed {seed} "
              f"--data-seed {seed}{extra} --out {out}", file=sys.stderr)
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
