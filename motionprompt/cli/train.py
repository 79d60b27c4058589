"""``python -m motionprompt train`` and ``score``: discriminator training and scoring from a shell."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from ..engine.records import num
from ..flow.settings import FlowSettings
from ..training.clips import skip_lines
from ..training.corruptions import CORRUPTIONS
from ..training.progress import ProgressPrinter

_DEFAULT_ITERS = {"lk_pyramid": 6}  # RAFT: 12 (torchvision's default)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    from ..disc.models import ARCHITECTURES
    from ..flow.registry import FLOW_BACKENDS

    p.description = ("Train a flow discriminator for MotionPrompt guidance: flows of real clips are labelled real, "
                     "flows of generated videos and/or synthetic corruptions of the real clips are labelled fake. "
                     "Flows are cached, so later runs with the same data and flow settings start training at once.")
    d = p.add_argument_group("data")
    d.add_argument("--real", action="append", required=True, metavar="DIR",
                   help="folder of real videos (mp4, webm, gif, avi, mov, mkv) and/or folders of frame images "
                        "(one folder = one clip), searched recursively; repeat for several folders")
    d.add_argument("--fake", action="append", default=[], metavar="DIR",
                   help="folder of generated videos, e.g. <webui>/outputs/txt2img-images/AnimateDiff; repeatable")
    d.add_argument("--synthetic", default="", metavar="LIST",
                   help="synthetic negatives made from the real clips, comma-separated or 'all': "
                        + "; ".join(f"{n}: {c.help}" for n, c in CORRUPTIONS.items()))
    d.add_argument("--gap", nargs=2, type=int, default=[1, 4], metavar=("MIN", "MAX"),
                   help="frame gap of a pair (default 1 4, as guidance samples pairs)")
    d.add_argument("--pairs-per-clip", type=int, default=32, help="frame pairs drawn per clip (default 32)")
    d.add_argument("--synthetic-per-clip", type=int, default=None,
                   help="synthetic pairs per real clip (default: pairs-per-clip, half of it with --fake)")
    d.add_argument("--crop-min", type=float, default=0.7,
                   help="random square crops of this fraction .. 1 of the short side (default 0.7)")
    d.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of clips held out for validation (default 0.2; split by clip)")
    d.add_argument("--data-seed", type=int, default=0,
                   help="seed of pair sampling, crops, corruptions and the split (changing it recomputes flows)")
    d.add_argument("--cache", metavar="DIR", help="flow cache folder (default $MOTIONPROMPT_FLOW_CACHE or "
                                                    "~/.cache/motionprompt/flows)")
    f = p.add_argument_group("flow (must match the flow used for guidance)")
    f.add_argument("--flow-backend", required=True, choices=sorted(FLOW_BACKENDS),
                   help="flow estimator; the discriminator only works with this backend. lk_pyramid needs no "
                        "weights; raft_small / raft_large need --flow-weights")
    f.add_argument("--flow-size", type=int, default=128,
                   help="flow working resolution = crop size in pixels, multiple of 8 (default 128)")
    f.add_argument("--flow-iters", type=int, default=None,
                   help="flow iterations (default: 6 for lk_pyramid, 12 for RAFT)")
    f.add_argument("--flow-weights", action="append", default=[], metavar="DIR",
                   help="folder holding raft_small_C_T_V2-01064c6d.pth / raft_large_C_T_SKHT_V2-ff5fadd5.pth")
    f.add_argument("--allow-download", action="store_true", help="let torchvision download the RAFT weights")
    t = p.add_argument_group("training")
    t.add_argument("--out", required=True, metavar="FILE.safetensors", help="discriminator to write; "
                   "FILE.resume.safetensors (resume state) and FILE.csv (loss/metrics) are written beside it")
    t.add_argument("--arch", default="cnn", choices=sorted(ARCHITECTURES),
                   help="cnn: small CNN from scratch (default); vit: the paper's ViT shape (slow on CPU)")
    t.add_argument("--width", type=int, default=None, help="cnn channel width (default 32)")
    t.add_argument("--arch-config", default=None, metavar="JSON",
                   help='other architecture arguments as JSON, e.g. \'{"depth": 3}\'')
    t.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    t.add_argument("--batch", type=int, default=32, help="batch size, half real half fake (default 32); under torchrun the global batch, "
                        "split evenly over the processes")
    t.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate (default 3e-4)")
    t.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    t.add_argument("--no-augment", action="store_true", help="no flips / time reversal of flows")
    t.add_argument("--val-every", type=int, default=100, help="validate every N steps (default 100)")
    t.add_argument("--save-every", type=int, default=500, help="save checkpoint + resume state every N steps")
    t.add_argument("--seed", type=int, default=0, help="seed of initialisation, batches and augmentation")
    t.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run saved in FILE.resume.safetensors (raise --steps to train longer)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing FILE and its resume state")


def _train_config(args):
    import json

    from ..training.trainer import TrainConfig

    arch_config = json.loads(args.arch_config) if args.arch_config else {}
    if not isinstance(arch_config, dict):
        raise SystemExit("--arch-config must be a JSON object")
    if args.width is not None:
        arch_config["width"] = args.width
    iters = args.flow_iters or _DEFAULT_ITERS.get(args.flow_backend, 12)
    return TrainConfig(
        real=args.real, out=args.out, flow=FlowSettings(args.flow_backend, args.flow_size, iters), fake=args.fake,
        synthetic=args.synthetic, flow_weights=args.flow_weights, allow_download=args.allow_download,
        arch=args.arch, arch_config=arch_config, steps=args.steps, batch=args.batch, lr=args.lr,
        weight_decay=args.weight_decay, gap_min=args.gap[0], gap_max=args.gap[1],
        pairs_per_clip=args.pairs_per_clip, synthetic_per_clip=args.synthetic_per_clip, crop_min=args.crop_min,
        augment=not args.no_augment, val_fraction=args.val_fraction, val_every=args.val_every,
        save_every=args.save_every, seed=args.seed, data_seed=args.data_seed, cache_dir=args.cache,
        device=args.device, resume=args.resume, overwrite=args.overwrite,
    )


def run_train(args) -> int:
    from ..flow.registry import FlowWeightsMissing
    from ..training.dataset import DataError
    from ..training.trainer import TrainError, train_discriminator

    printer = ProgressPrinter()
    stop = []

    def first_ctrl_c(signum, frame):  # the first Ctrl-C ends the run cleanly with a save; a second one kills
        stop.append(1)
        print("\ninterrupt: saving at the end of this step (Ctrl-C again to abort without saving)", file=sys.stderr)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, first_ctrl_c) if main_thread else None
    try:
        cfg = _train_config(args)
        result = train_discriminator(cfg, progress=printer, interrupted=lambda: bool(stop),
                                     log=lambda m: print(m, file=sys.stderr, flush=True))
    except (TrainError, DataError, FlowWeightsMissing, ValueError) as exc:
        printer.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        printer.close()
        print("aborted; the last periodic save can be continued with --resume", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    printer.close()
    if result.rank != 0:  # under torchrun rank 0 reports for all
        return 0
    d = result.data
    print(f"data: {d.get('real_clips', 0)} real clip(s), {d.get('generated_clips', 0)} generated clip(s); "
          f"samples {d.get('samples', {})}; validation clips: {', '.join(d.get('val_clips', [])) or '-'}")
    for line in skip_lines(result.skipped):
        print(f"skipped: {line}")
    print(f"flows: {result.cache['computed']} shard(s) computed, {result.cache['reused']} reused "
          f"({result.flow_seconds:.1f} s) in {result.cache['folder']}")
    if result.interrupted and result.checkpoint is None:
        print("interrupted before the first training step; nothing saved (computed flows are cached, run again)")
        return 130
    m = result.metrics
    if m:
        det = ", ".join(f"{k} {v:.2f}" for k, v in m.get("detected", {}).items())
        print(f"validation @ step {result.step}: accuracy {num(m.get('acc'))}, ROC AUC {num(m.get('auc'))}, "
              f"real judged real {num(m.get('real_acc'))}, fake judged fake {num(m.get('fake_acc'))}"
              + (f" ({det})" if det else ""))
    rate = result.seconds / max(1, result.step - result.resumed_from) * 1000
    print(f"trained steps {result.resumed_from}->{result.step} of {result.total_steps} in {result.seconds:.1f} s "
          f"({rate:.0f} s per 1k steps)" + (" - interrupted" if result.interrupted else ""))
    print(f"wrote {result.checkpoint}\n      {result.csv}\n      {result.resume_state}")
    return 0


def add_score_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Score videos with a trained discriminator: the mean probability that the motion is real, "
                     "over evenly spaced frame pairs (the D score of `metrics`), using the flow backend and size "
                     "stored in the checkpoint.")
    p.add_argument("paths", nargs="+", metavar="FILE_OR_DIR",
                   help="video files, frame folders, or folders searched recursively")
    p.add_argument("--disc", required=True, metavar="FILE", help="discriminator .safetensors")
    p.add_argument("--pairs", type=int, default=16, help="frame pairs per video (default 16)")
    p.add_argument("--gap", nargs=2, type=int, default=(1, 1), metavar=("MIN", "MAX"),
                   help="frame gap range cycled over the pairs (default 1 1: adjacent frames)")
    p.add_argument("--flow-weights", action="append", default=[], metavar="DIR", help="folder with RAFT .pth weights")
    p.add_argument("--allow-download", action="store_true", help="let torchvision download RAFT weights")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")


def run_score(args) -> int:
    from ..disc.checkpoint import CheckpointError, load_discriminator
    from ..flow.registry import FlowWeightsMissing
    from ..training.scoring import format_scores, score_videos

    printer = ProgressPrinter()
    try:
        disc = load_discriminator(args.disc, args.device)
        scores = score_videos(args.paths, disc, args.pairs, tuple(args.gap),
                              flow_weights=args.flow_weights, allow_download=args.allow_download,
                              device=args.device, progress=printer)
    except (CheckpointError, FlowWeightsMissing, ValueError) as exc:
        printer.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    printer.close()
    print(f"discriminator {args.disc} ({disc.arch}, flow {disc.flow.backend} @ {disc.flow.size}px)")
    print(format_scores(scores))
    return 0
