"""``python -m motionprompt bench``: flags, settings from them, and the printed report + JSON line."""

from __future__ import annotations

import json

from ...engine.config import PRESETS
from .report import format_report
from .runs import run_bench
from .settings import BenchSettings


def add_arguments(p) -> None:
    p.add_argument("--model", default="tiny", choices=["tiny", "sd15-random"],
                   help="tiny random model (seconds) or SD1.5-sized random model (minutes on CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="model weights dtype (auto: fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--preset", nargs="+", default=["paper"], choices=sorted(PRESETS),
                   help="guided runs to compare against one plain run (e.g. --preset paper fast)")
    p.add_argument("--memory", nargs="+", default=[], choices=["auto", "speed", "balanced", "low"],
                   help="run every preset on each of these memory paths (default: the preset's own)")
    p.add_argument("--steps", type=int, help="sampling steps (default: 25; sd15-random on CPU: 10)")
    p.add_argument("--frames", type=int, help="frames (default 16; sd15-random on CPU: 8)")
    p.add_argument("--height", type=int, help="height (default 64; sd15-random on CUDA: 512)")
    p.add_argument("--width", type=int, help="width (default 64; sd15-random on CUDA: 512)")
    p.add_argument("--cfg", type=float, default=7.5, help="classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flow-backend", default="lk_pyramid",
                   help="flow backend for every preset (default lk_pyramid: no weights); 'preset' keeps each preset's")
    p.add_argument("--flow-size", type=int, help="override the presets' flow short side")
    p.add_argument("--flow-iters", type=int, help="override the presets' flow iterations")
    p.add_argument("--random-flow", action="store_true", help="random RAFT weights (cost measurement only)")
    p.add_argument("--flow-weights", action="append", default=[], metavar="DIR", help="folder with RAFT .pth weights")
    d = p.add_mutually_exclusive_group()
    d.add_argument("--disc", help="discriminator .safetensors (its flow backend is used)")
    d.add_argument("--random-disc", action="store_true", help="random CNN discriminator (the default)")
    p.add_argument("--repeat", type=int, default=1, help="interleaved repeats; the fastest of each run is reported")
    p.add_argument("--threads", type=int, help="torch CPU threads (on a busy shared CPU, 1 gives steadier timings)")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up runs")
    p.add_argument("--no-probe", action="store_true", help="skip the disc-loss-after-step probe")
    p.add_argument("--memory-accounting", action="store_true",
                   help="instead of the runs: the bytes one inner iteration keeps for its backward, per phase and "
                        "memory path, at two small sizes (--accounting-sides), extrapolated to 16 frames 512² fp16")
    p.add_argument("--accounting-sides", type=int, nargs=2, default=[128, 192], metavar=("SMALL", "LARGE"))
    p.add_argument("--json-out", help="also write the JSON result to this file")
    p.add_argument("--md-out", help="also write the markdown report to this file")


def settings_from_args(args) -> BenchSettings:
    return BenchSettings(
        model=args.model, device=args.device, dtype=args.dtype, presets=list(args.preset), memory=list(args.memory),
        steps=args.steps,
        frames=args.frames, height=args.height, width=args.width, cfg_scale=args.cfg, seed=args.seed,
        flow_backend=None if args.flow_backend == "preset" else args.flow_backend, flow_size=args.flow_size,
        flow_iters=args.flow_iters, random_flow=args.random_flow, flow_weights=args.flow_weights, disc=args.disc,
        warmup=not args.no_warmup, probe=not args.no_probe, repeat=args.repeat,
        threads=args.threads,
    )


def _accounting(args) -> dict:
    import torch

    from .accounting import memory_accounting
    from .settings import build_model

    s = settings_from_args(args)
    if s.threads:
        torch.set_num_threads(s.threads)
    device = torch.device(s.device)
    model, dtype = build_model(s.model, device, s.dtype)
    elem = {"fp32": 4, "fp16": 2, "bf16": 2}[dtype]
    result = memory_accounting(model, device, elem, args.frames or 2, tuple(args.accounting_sides), (16, 512, 2),
                               s.prompt, log=lambda m: print(f"  {m}", flush=True))
    result.update({"model": s.model, "device": str(device), "dtype": dtype})
    return result


def run(args) -> dict:
    if getattr(args, "memory_accounting", False):
        result = _accounting(args)
        if args.json_out:
            from ...files.atomic import write_json

            write_json(args.json_out, result)
        print(json.dumps(result, default=str))
        return result
    result = run_bench(settings_from_args(args), log=lambda m: print(f"  {m}", flush=True))
    report = format_report(result)
    print(report)
    if getattr(args, "md_out", None):
        from ...files.atomic import write_text

        write_text(args.md_out, report + "\n")
    if args.json_out:
        from ...files.atomic import write_json

        write_json(args.json_out, result)
    print(json.dumps(result, default=str))
    return result
