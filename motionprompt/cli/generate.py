"""``python -m motionprompt generate``: one clip on the diffusers reference host, guided or not.

Also the engine's command-line flags (``_add_engine_args``: every ``GuidanceConfig`` setting) and the
checkpoint-wins flow rule of the CLI; the demo samples through ``run_generate`` too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import __version__
from .. import toy as _toy  # noqa: F401  registers --model toy (motionprompt.toy.source)
from ..engine.config import MEMORY_MODES, PRESETS, preset
from ..files.video import FRAME_FORMATS
from ..flow.policy import FlowMismatch, resolve_flow


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("guidance (defaults come from --preset)")
    g.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="starting point for all settings")
    g.add_argument("--tokens", dest="n_tokens", type=int, help="number of learnable tokens appended to the prompt")
    g.add_argument("--init-word", help='word whose embedding initialises the tokens (default "authentic")')
    g.add_argument("--inner-iters", type=int, help="optimization iterations per guided step (paper: 3)")
    g.add_argument("--lr", type=float, help="token learning rate")
    g.add_argument("--optimizer", choices=["adam", "nsgd"], help="adam, or normalized SGD (step = lr*|T0|)")
    g.add_argument("--grad-clip", type=float, help="max token-gradient norm (0 = off)")
    g.add_argument("--window", nargs=2, type=float, metavar=("START", "END"),
                   help="guided steps as fractions of the step count (paper: 0.16 0.6 = steps 4-14 of 25)")
    g.add_argument("--every-k", type=int, help="optimize only every k-th step of the window")
    g.add_argument("--pairs", type=int, help="frame pairs scored per iteration")
    g.add_argument("--gap", nargs=2, type=int, metavar=("MIN", "MAX"), help="frame gap range of a pair")
    g.add_argument("--lambda-disc", type=float, help="weight of the discriminator term")
    g.add_argument("--lambda-tv", type=float, help="weight of the flow TV term (normalized units)")
    g.add_argument("--lambda-drift", type=float, help="weight of ||T - T0||^2")
    g.add_argument("--disc-loss", choices=["saturating", "non_saturating"], help="log(1-D) (paper) or -log D")
    g.add_argument("--x0-mode", choices=["cond", "cfg"], help="x0 from the conditional branch (paper) or CFG")
    g.add_argument("--cond-after", choices=["original", "optimized"], help="conditioning after the window")
    g.add_argument("--cond-before", choices=["original", "init_tokens"], help="conditioning before the window")
    g.add_argument("--guidance-seed", dest="guide_seed", type=int, help="seed of the frame-pair sampler")
    g.add_argument("--start-token", help="token file (token-train) to start from instead of --init-word; with "
                   "--inner-iters 0 it is used as it is (amortized, no inner loop)")
    g.add_argument("--unet-autocast", choices=["none", "fp16", "bf16"], help="autocast of the UNet call on CUDA")
    g.add_argument("--memory", choices=list(MEMORY_MODES),
                   help="memory path of the inner loop: auto (default: the fastest that fits the free GPU memory), "
                        "speed, balanced (UNet checkpointed), low (UNet and VAE decoder; the low_vram preset's)")
    f = p.add_argument_group("flow")
    f.add_argument("--flow-backend", help="flow backend (raft_small, raft_large, ...)")
    f.add_argument("--flow-size", type=int, help="short side of frames given to the flow network (multiple of 8)")
    f.add_argument("--flow-iters", type=int, help="flow refinement iterations")
    f.add_argument("--flow-weights", action="append", default=[], metavar="DIR", help="folder with RAFT .pth weights")
    f.add_argument("--allow-download", action="store_true", help="let torchvision download RAFT weights")
    f.add_argument("--random-flow", action="store_true", help="random RAFT weights (testing only: flow is noise)")


def _config_from_args(args):
    overrides = {
        k: getattr(args, k)
        for k in ("n_tokens", "init_word", "inner_iters", "lr", "optimizer", "grad_clip", "every_k", "pairs",
                  "lambda_disc", "lambda_tv", "lambda_drift", "disc_loss", "x0_mode", "cond_after", "cond_before",
                  "unet_autocast", "memory")
        if getattr(args, k, None) is not None
    }
    if args.window:
        overrides["window_start"], overrides["window_end"] = args.window
    if args.gap:
        overrides["gap_min"], overrides["gap_max"] = args.gap
    if args.guide_seed is not None:
        overrides["seed"] = args.guide_seed
    cfg = preset(args.preset, **overrides)
    cfg.flow = resolve_flow(None, cfg.flow, args.flow_backend, args.flow_size, args.flow_iters).settings
    if getattr(args, "start_token", None):
        from ..amortized.token_file import with_start_token

        with_start_token(cfg, args.start_token)
    return cfg.validate()


def _disc_flow(cfg, args, disc_flow, notes: list) -> None:
    """The checkpoint's flow wins over the preset's (``flow_policy``); explicit --flow-* are kept, with a note."""
    choice = resolve_flow(disc_flow, cfg.flow, args.flow_backend, args.flow_size, args.flow_iters)
    cfg.flow = choice.settings
    notes.extend(choice.notes)


def _add_generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny", help='"toy" (the shipped toy-world model), a toy model .safetensors, '
                   '"tiny" (random, for tests), a single-file SD1.5 checkpoint .safetensors (the WebUI\'s; with '
                   '--motion-adapter and --config), a diffusers AnimateDiff folder, or an SD1.5 diffusers folder with '
                   '--motion-adapter')
    p.add_argument("--motion-adapter", help="AnimateDiff motion module .safetensors (the WebUI's) or diffusers "
                   "MotionAdapter folder, when --model is an SD1.5 checkpoint file or a plain SD1.5 diffusers folder")
    p.add_argument("--config", help="SD1.5's diffusers configs and CLIP tokenizer, no weights (model_index.json, unet/, "
                   "vae/, text_encoder/, tokenizer/, scheduler/), for a single-file --model; default: a local Hugging "
                   "Face cache of stable-diffusion-v1-5 if it holds them. Nothing is downloaded")
    p.add_argument("--prompt", default=None, help="default: a toy-world caption for toy models, else a fox")
    p.add_argument("--negative", default="")
    p.add_argument("--frames", type=int, default=None, help="default: the toy model's frames (16), else 16")
    p.add_argument("--height", type=int, default=None, help="default: the toy model's size (32), else 64")
    p.add_argument("--width", type=int, default=None, help="default: the toy model's size, else 64")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default 25, as the toy tables)")
    p.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale (default: 5 for toy "
                   "models, the scale every toy table and its discriminators' data use; else 7.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--disc", help="discriminator .safetensors (required unless --random-disc)")
    p.add_argument("--random-disc", action="store_true", help="untrained random discriminator (testing only)")
    p.add_argument("--no-guidance", action="store_true", help="plain AnimateDiff sampling")
    p.add_argument("--compare", action="store_true", help="also sample without guidance from the same seed")
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--out", default="outputs/generate", help="output folder (clips + record.json)")
    p.add_argument("--frames-out", choices=FRAME_FORMATS, help="also the exact frames beside each GIF (a GIF's "
                   "palette changes colours): npy = plain.npy/guided.npy, one uint8 array [F, H, W, 3]; png = "
                   "folders plain/ and guided/ of numbered PNG frames (train --fake takes them)")
    _add_engine_args(p)


#: what a flag left out means for a diffusers (or the tiny) model; a toy model brings its own (run_generate)
DEFAULTS = {"prompt": "a white fox running on a rock, snow", "height": 64, "width": 64, "frames": 16, "steps": 25,
            "cfg": 7.5}


def build_generate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m motionprompt generate")
    _add_generate_args(p)
    return p


def run_generate(args, wrap_guide=None) -> dict:
    """wrap_guide(guide): lets a caller (the demo) observe the guide before sampling starts."""
    import torch

    from ..amortized.token_file import start_tokens
    from ..disc.checkpoint import load_discriminator
    from ..disc.models import build_discriminator
    from ..engine.guidance import MotionGuide
    from ..files.atomic import write_json
    from ..files.video import save_frames, save_gif
    from ..flow.registry import build_flow
    from ..hosts.diffusers.host import DiffusersVideoHost
    from ..hosts.diffusers.sampler import sample
    from ..hosts.diffusers.sources import load_source

    cfg = _config_from_args(args)
    out = Path(args.out)
    notes = []
    defaults = dict(DEFAULTS)
    source = load_source(args.model, device=args.device, motion_adapter=args.motion_adapter,
                         config=getattr(args, "config", None))
    model = source.model
    defaults.update(source.sampling)  # a toy model brings its own prompt, size, frames, steps and scale
    notes.extend(source.notes)
    for key, value in defaults.items():  # a flag given always wins over the model's default
        if getattr(args, key) is None:
            setattr(args, key, value)
    host = DiffusersVideoHost(model, args.prompt, args.negative, cfg.n_tokens, args.device)
    common = {"steps": args.steps, "cfg_scale": args.cfg, "seed": args.seed, "num_frames": args.frames,
              "height": args.height, "width": args.width}
    record: dict = {"version": __version__, "model": model.name, "prompt": args.prompt, "sampling": common,
                    "config": cfg.to_dict(), "notes": notes, "torch_threads": torch.get_num_threads()}

    def save(frames, name: str) -> None:
        save_gif(frames, out / f"{name}.gif", args.fps)
        if getattr(args, "frames_out", None):
            save_frames(frames, out / name, args.frames_out)

    if args.no_guidance or args.compare:
        plain = sample(host, None, **common)
        save(plain.frames, "plain")
        record["plain_seconds"] = plain.seconds
    if not args.no_guidance and cfg.inner_iters == 0:  # an amortized token as it is: no flow, no D needed
        guide = MotionGuide(cfg, host, None, None, start_tokens=start_tokens(cfg))
        notes.append(f"amortized token {cfg.start_token} appended at every step, no inner loop")
        guided = sample(host, guide, **common)
        save(guided.frames, "guided")
        record.update(guided_seconds=guided.seconds, summary=guide.summary(), steps=guided.steps)
    elif not args.no_guidance:
        if args.disc:
            disc = load_discriminator(args.disc, args.device)
            try:
                _disc_flow(cfg, args, disc.flow, notes)
            except FlowMismatch as exc:
                raise SystemExit(f"{args.disc}: {exc}") from exc
            record["config"] = cfg.to_dict()
        elif args.random_disc:
            torch.manual_seed(cfg.seed)
            disc = build_discriminator("cnn").to(args.device)
            notes.append("random untrained discriminator: its score carries no meaning about motion")
        else:
            raise SystemExit("give --disc FILE (a trained discriminator) or --random-disc for a mechanics test")
        flow = build_flow(cfg.flow, args.flow_weights, args.allow_download, args.random_flow).to(args.device)
        if getattr(flow, "pretrained", True) is False:
            notes.append("random RAFT weights: the flow is noise, not motion")
        if cfg.flow.backend == "lk_pyramid":
            notes.append("flow: weight-free pyramidal Lucas-Kanade (real motion, no download)")
        guide = MotionGuide(cfg, host, flow, disc, start_tokens=start_tokens(cfg))
        if wrap_guide is not None:
            wrap_guide(guide)
        guided = sample(host, guide, **common)
        save(guided.frames, "guided")
        record.update(guided_seconds=guided.seconds, summary=guide.summary(), steps=guided.steps)
    write_json(out / "record.json", record)
    return record


def _print_summary(record: dict, out: str) -> None:
    print(f"MotionPrompt {record['version']} on model '{record['model']}'")
    for note in record["notes"]:
        print(f"  note: {note}")
    if "plain_seconds" in record:
        print(f"  plain sampling : {record['plain_seconds']:.1f} s")
    if "summary" in record:
        s = record["summary"]
        print(f"  guided sampling: {record['guided_seconds']:.1f} s, {s['steps_guided']} steps guided, "
              f"{s['iterations']} iterations")
        if s["d_score_first"] is not None:
            print(f"  D score (first -> last iteration, mean over steps): {s['d_score_first']:.4f} -> {s['d_score_last']:.4f}")
        if s["disabled"]:
            print(f"  guidance stopped: {s['disabled']}")
    print(f"  wrote {out}/")
