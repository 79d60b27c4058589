"""``python -m motionprompt token-train`` and ``token-export``: the amortized token from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..training.stopping import stop_requests
from . import token_file
from .train import TokenTrainConfig, TokenTrainer, TokenTrainError

#: CLI flag -> GuidanceConfig field (the per-sample settings the token is trained with)
GUIDANCE_FLAGS = {
    "n_tokens": int, "init_word": str, "lr": float, "optimizer": str, "every_k": int, "pairs": int,
    "lambda_disc": float, "lambda_tv": float, "lambda_drift": float, "disc_loss": str, "x0_mode": str,
    "grad_clip": float, "start_token": str,
}


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    d = TokenTrainConfig(disc="")
    p.add_argument("--disc", required=True, help="guiding discriminator .safetensors (its flow settings are used)")
    p.add_argument("--model", default=d.model, help='"toy" (the shipped toy model), a toy model .safetensors, '
                   '"tiny" (random, for tests), a single-file SD1.5 checkpoint .safetensors (the WebUI\'s; with '
                   '--motion-adapter and --config), a diffusers AnimateDiff folder, or an SD1.5 diffusers folder with '
                   '--motion-adapter')
    p.add_argument("--motion-adapter", default="", help="AnimateDiff motion module .safetensors (the WebUI's) or "
                   "diffusers MotionAdapter folder, when --model is an SD1.5 checkpoint file or diffusers folder")
    p.add_argument("--config", dest="model_config", default="", help="SD1.5's diffusers configs and CLIP tokenizer, no "
                   "weights (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), for a single-file "
                   "--model; default: a local Hugging Face cache of stable-diffusion-v1-5 if it holds them. Nothing "
                   "is downloaded")
    p.add_argument("--out", default=d.out, help="folder for state.safetensors (resume), log.csv and the token; "
                   "an existing state there is continued")
    p.add_argument("--name", default=d.name, help="name of the exported embedding = the word that triggers it in a "
                   "WebUI prompt (file <out>/<name>.safetensors)")
    p.add_argument("--prompts", default="", help="text file, one prompt a line (default: the toy world's guiding-split "
                   "captions, never its evaluation captions)")
    p.add_argument("--val-prompts", default="", help="text file of held-out prompts for validation (default: a "
                   "spread-out part of the prompts, --val-fraction)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--seeds", type=int, default=d.seeds, help="sampling seeds per training prompt")
    p.add_argument("--val-seeds", type=int, default=d.val_seeds, help="seeds per held-out prompt")
    p.add_argument("--val-steps", type=int, default=d.val_steps, help="guided steps per held-out clip scored")
    p.add_argument("--sampling-steps", type=int, default=d.sampling_steps, help="DDIM steps of the trajectories")
    p.add_argument("--cfg", type=float, default=d.cfg_scale, help="classifier-free guidance scale")
    p.add_argument("--frames", type=int, default=d.frames, help="frames (tiny/diffusers models; a toy model has its own)")
    p.add_argument("--size", type=int, default=d.size, help="frame side (tiny/diffusers models)")
    p.add_argument("--steps", type=int, default=d.steps, help="optimizer updates in all")
    p.add_argument("--batch", type=int, default=d.batch, help="(prompt, seed, step) triples per update")
    p.add_argument("--refresh-every", type=int, default=d.refresh_every, help="resample the latents with the current "
                   "token every N updates (on-policy); 0 = plain latents only")
    p.add_argument("--val-every", type=int, default=d.val_every)
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the batches and frame pairs")
    p.add_argument("--device", default=d.device)
    p.add_argument("--max-minutes", type=float, default=0, help="stop (saved, resumable) after this long; 0 = no limit")
    p.add_argument("--overwrite", action="store_true", help="start over even when --out holds a state")
    g = p.add_argument_group("token and loss (defaults: the paper preset; lr 1e-3 for the persistent optimizer)")
    g.add_argument("--tokens", dest="n_tokens", type=int, help="number of learnable tokens (paper: 1)")
    g.add_argument("--init-word", help='word whose embedding starts the tokens (default "authentic")')
    g.add_argument("--start-token", help="a token file to start from instead (e.g. to go on with other prompts); "
                   "its vectors are T0, the drift anchors to them")
    g.add_argument("--lr", type=float, help="learning rate (nsgd: a step of lr x the token norm)")
    g.add_argument("--optimizer", choices=["adam", "nsgd"], help="persistent Adam, or normalized SGD")
    g.add_argument("--grad-clip", type=float)
    g.add_argument("--window", nargs=2, type=float, metavar=("START", "END"), help="guided steps as fractions")
    g.add_argument("--every-k", type=int)
    g.add_argument("--pairs", type=int, help="frame pairs scored per (prompt, seed, step)")
    g.add_argument("--gap", nargs=2, type=int, metavar=("MIN", "MAX"))
    g.add_argument("--lambda-disc", type=float)
    g.add_argument("--lambda-tv", type=float)
    g.add_argument("--lambda-drift", type=float)
    g.add_argument("--lambda-speed", type=float, default=d.lambda_speed, help="keep the scored pairs' flow speed at "
                   "the prompt alone's (0 = off, the default; the validation reports the speed ratio either way)")
    g.add_argument("--disc-loss", choices=["saturating", "non_saturating"])
    g.add_argument("--x0-mode", choices=["cond", "cfg"])
    g.add_argument("--flow-iters", type=int, default=0, help="flow iterations; 0 = the discriminator's own")
    g.add_argument("--flow-weights", action="append", default=[], metavar="DIR", help="folder with RAFT .pth weights")
    g.add_argument("--allow-download", action="store_true", help="let torchvision download RAFT weights")


def config_from_args(args) -> TokenTrainConfig:
    guidance = {k: getattr(args, k) for k in GUIDANCE_FLAGS if getattr(args, k, None) is not None}
    if args.window:
        guidance["window_start"], guidance["window_end"] = args.window
    if args.gap:
        guidance["gap_min"], guidance["gap_max"] = args.gap
    return TokenTrainConfig(
        disc=args.disc, out=args.out, name=args.name, model=args.model, motion_adapter=args.motion_adapter,
        model_config=args.model_config,
        prompts=args.prompts,
        val_prompts=args.val_prompts, val_fraction=args.val_fraction, seeds=args.seeds, val_seeds=args.val_seeds,
        val_steps=args.val_steps, sampling_steps=args.sampling_steps, cfg_scale=args.cfg, frames=args.frames,
        size=args.size, guidance=guidance, flow_iters=args.flow_iters, steps=args.steps, batch=args.batch,
        refresh_every=args.refresh_every, lambda_speed=args.lambda_speed, val_every=args.val_every,
        save_every=args.save_every, seed=args.seed,
        flow_weights=list(args.flow_weights), allow_download=args.allow_download, device=args.device,
    )


def run_train(args) -> int:
    from ..disc.checkpoint import CheckpointError
    from ..flow.policy import FlowMismatch
    from ..flow.registry import FlowWeightsMissing

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        cfg = config_from_args(args)
        trainer = TokenTrainer(cfg, log=say, overwrite=args.overwrite)
    except (TokenTrainError, CheckpointError, FlowMismatch, FlowWeightsMissing, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=trainer.step, desc="token", file=sys.stderr, dynamic_ncols=True)
    last_val: list = [None]

    def progress(step: int, total: int, row: dict) -> None:
        if row.get("val_d") is not None:
            last_val[0] = row["val_d"]
        held = f", held-out D {last_val[0]:.4f}" if last_val[0] is not None else ""
        bar.set_postfix_str(f"loss {row['loss']:.4f}, D {row['d_score']:.3f}{held}", refresh=False)
        bar.update(step - bar.n)

    try:
        with stop_requests(args.max_minutes, "after this update") as stop:
            status = trainer.run(stop=stop, progress=progress)
    finally:
        bar.close()
    val = trainer.last_validation()
    token = Path(cfg.out) / f"{cfg.name}{token_file.SUFFIX}"
    if status == "done":
        say(f"done: update {trainer.step}/{cfg.steps}, {trainer.seconds / 60:.1f} min trained")
    else:  # a stop someone asked for, saved: not a failure (exit 0, as train and toy-train)
        say(f"stopped by {stop.reason or 'request'} and saved at update {trainer.step}/{cfg.steps} "
            f"({trainer.seconds / 60:.1f} min trained); run the same command again to continue")
    if val.get("d_last") is not None:
        say(f"held-out D score: prompt alone {_f(val.get('d_plain'))}, with the init word {_f(val.get('d_init'))}, "
            f"with the token {_f(val.get('d_last'))} (update {val.get('step')})")
        if val.get("speed_ratio") is not None:
            say(f"held-out flow speed with the token: x{val['speed_ratio']:.3f} of the prompt alone's "
                "(1 = the prompted speed kept; --lambda-speed holds it)")
    say(f"token: {token} (copy it into the WebUI's embeddings folder; its name is the prompt word)")
    return 0


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("token", help="a token file (e.g. <out>/<name>.safetensors from token-train)")
    p.add_argument("--name", required=True, help="the new name: the word that triggers it in a WebUI prompt")
    p.add_argument("--to", default=".", help="folder to write <name>.safetensors into (e.g. the WebUI's embeddings/)")


def run_export(args) -> int:
    """A copy of a token under another name (the name is the file name); the metadata travels with it."""
    try:
        tok = token_file.load_token(args.token)
        meta = {k: v for k, v in tok.meta.items() if k not in ("format", "format_version", "name", "n_tokens", "width")}
        if not tok.ours:
            meta["source"] = f"imported from {Path(args.token).name}"
        path = token_file.save_token(Path(args.to) / f"{token_file.check_name(args.name)}{token_file.SUFFIX}",
                                     tok.vectors, meta)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({tok.vectors.shape[0]} x {tok.vectors.shape[1]}); type '{args.name}' in a prompt to use it")
    return 0


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"
