"""``python -m motionprompt toy-train``: flags, defaults taken from a resumed state, signals, progress."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..training.stopping import stop_requests
from .train import LEARN_KEYS, TEXT_ENCODERS, ToyTrainConfig, ToyTrainer, saved_setting
from .world import LEVELS


def saved_config(state: Path) -> dict:
    """The training settings stored in a state file ({} when there is none or it is unreadable)."""
    if not state.is_file():
        return {}
    try:
        from safetensors import safe_open

        with safe_open(str(state), "pt") as f:
            return json.loads((f.metadata() or {}).get("config", "{}"))
    except Exception:  # the trainer itself reports a foreign or corrupt file
        return {}


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = ToyTrainConfig()
    p.add_argument("--state", default="checkpoints/toy_state.safetensors",
                   help="resumable training state (created, or continued when it exists); the EMA model "
                   "toy_model.safetensors and the loss log toy_state.csv are written beside it")
    p.add_argument("--level", default=d.level, choices=sorted(LEVELS), help="which part of the world to train on")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--vae-steps", type=int, default=d.vae_steps)
    p.add_argument("--steps", type=int, default=d.steps, help="UNet + text encoder steps (total, not more)")
    p.add_argument("--batch", type=int, help=f"clips per UNet step (default {d.batch}, or the resumed state's)")
    p.add_argument("--lr", type=float, help=f"UNet learning rate (default {d.lr}, or the resumed state's)")
    p.add_argument("--x0-floor", type=float, help="least weight of the clean-clip error at low SNR, where min-SNR "
                   f"weighting alone gives it ~SNR (default {d.x0_floor}, or the resumed state's)")
    p.add_argument("--prediction", choices=("epsilon", "v_prediction"),
                   help="what the UNet predicts; v_prediction trains on a zero-terminal-SNR schedule (pure noise at "
                   f"the last step, as in sampling); switching on a resume restarts the EMA (default {d.prediction}, "
                   "or the resumed state's)")
    p.add_argument("--t-shift", type=float, help="timestep shift s (SD3): > 1 trains more often at high noise, "
                   f"where the caption decides the layout (default {d.t_shift}, or the resumed state's)")
    p.add_argument("--text-lr-mult", type=float, help="the text encoder's learning rate as a multiple of --lr "
                   f"(default {d.text_lr_mult}, or the resumed state's)")
    p.add_argument("--text-encoder", choices=TEXT_ENCODERS, help="learn the text encoder with the UNet, or "
                   "keep it at its random initialisation as SD keeps CLIP fixed (switching to frozen on a resume "
                   f"re-initialises it and restarts the EMA; default {d.text_encoder}, or the resumed state's)")
    p.add_argument("--export", metavar="PATH", help="write the state's EMA model to PATH (e.g. "
                   "motionprompt/toy/weights/toy_model.safetensors) and exit without training")
    p.add_argument("--save-every", type=float, default=d.save_every, help="seconds between state saves")
    p.add_argument("--max-minutes", type=float, default=0, help="stop (saved, resumable) after this long; 0 = no limit")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available)")
    p.add_argument("--workers", type=int, default=0,
                   help="processes rendering clips ahead of the UNet (worth it on a GPU; 0 = in the loop)")


def run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    saved = saved_config(Path(args.state))  # what a resume keeps unless asked otherwise
    learn = {k: getattr(args, k) if getattr(args, k) is not None else saved_setting(saved, k) for k in LEARN_KEYS}
    cfg = ToyTrainConfig(level=args.level, seed=args.seed, vae_steps=args.vae_steps, steps=args.steps, **learn,
                         save_every=args.save_every, device=device, workers=args.workers)
    try:
        trainer = ToyTrainer(cfg, Path(args.state), log=lambda m: print(m, file=sys.stderr, flush=True))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.export:
        try:
            print(f"wrote {trainer.export(Path(args.export))} (UNet step {trainer.step})", file=sys.stderr)
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    bars: dict = {}

    def progress(phase, step, total, loss):
        from tqdm import tqdm

        if phase not in bars:
            for b in bars.values():
                b.close()
            bars[phase] = tqdm(total=total, initial=step - 1, desc=f"toy {phase}", file=sys.stderr, dynamic_ncols=True,
                               mininterval=5.0)
        bars[phase].update(1)
        bars[phase].set_postfix_str(f"loss {loss:.4f}", refresh=False)

    try:
        with stop_requests(args.max_minutes) as stop:
            result = trainer.run(stop=stop, progress=progress)
    finally:
        for b in bars.values():
            b.close()
    print(f"{result}: phase {trainer.phase}, vae step {trainer.vae_step}, unet step {trainer.step}/{cfg.steps}, "
          f"{trainer.seconds / 3600:.2f} h trained; state {args.state}", file=sys.stderr)
    return 0
