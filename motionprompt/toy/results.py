"""``python -m motionprompt toy-results``: the whole toy-world protocol in one resumable command.

Gate → the two discriminators (the paper's protocol, disjoint splits) → the main comparison (paper and
fast presets vs plain on every held-out prompt) → the amortized motion token (``token-train``'s defaults
on the guiding split, then as it is and as a hybrid on the same held-out pairs) → the paper's ablations on
a fixed subset → one markdown file with the tables the README quotes. Every stage keeps its outputs, so running the command
again continues where it stopped; nothing here looks at a result before the arms, prompts and seeds
below are fixed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .demo import GUIDE_D, INDEPENDENT_D, MOTION_TOKEN

#: fixed before any guided toy result was looked at (issue 9's ablation list)
MAIN_ARMS = ("paper", "fast")
MAIN_SIZE = (24, 3)  # held-out prompts x seeds: 72 pairs (target >= 64)
ABLATION_SIZE = (12, 2)
ABLATION_ARMS = (
    "paper",
    "K1=paper:inner_iters=1",
    "K2=paper:inner_iters=2",
    "K5=paper:inner_iters=5",
    "early=paper:window_start=0.0,window_end=0.4",
    "all_steps=paper:window_start=0.0,window_end=1.0",
    "tv0=paper:lambda_tv=0.0",
    "tv1=paper:lambda_tv=1.0",
    "tokens3=paper:n_tokens=3",
    "init_the=paper:init_word=the",
    "nsgd=paper:optimizer=nsgd,lr=0.1",
    "flow_iters3=paper:flow.iters=3",
    "control=paper:lr=1e-12",  # the whole inner loop, no token change: isolates the effect of the update
)
#: the columns of the tables: metric, higher is better
TABLE_METRICS = ("d_independent", "d_guide", "warp_error", "flicker", "direction_ok", "jerk", "area_cv", "displacement",
                 "speed_error")


def discriminators(out: Path, model: str, log=print) -> dict[str, Path]:
    """The shipped pair when present, else trained here with ``toy-disc``'s defaults (resumable)."""
    if GUIDE_D.is_file() and INDEPENDENT_D.is_file() and model == "toy":
        return {"guide": GUIDE_D, "independent": INDEPENDENT_D}
    from . import disc as toy_disc

    paths = {}
    for role in ("guide", "independent"):
        path = out / "discs" / f"{role}.safetensors"
        if not path.is_file():
            args = toy_disc.build_parser().parse_args(["--model", model, "--role", role, "--data", str(out / "discs"),
                                                      "--out", str(path), "--resume"])
            if toy_disc.run(args) != 0:
                raise SystemExit(f"training the {role} discriminator failed")
        paths[role] = path
    log(f"discriminators: {paths['guide']}, {paths['independent']}")
    return paths


def motion_token(out: Path, model: str, discs: dict, log=print) -> Path:
    """The shipped token for the shipped model and discriminators, else one trained here with ``token-train``'s
    defaults against the guiding discriminator (resumable: an unfinished state in ``out`` is continued). A token
    file counts as finished only when it says it holds the last update: a run killed between saving its state
    and exporting the token leaves an older token, which is exported again from the finished state."""
    if model == "toy" and discs["guide"] == GUIDE_D and MOTION_TOKEN.is_file():
        return MOTION_TOKEN
    from ..amortized.token_file import SUFFIX, TokenFileError, load_token
    from ..amortized.train import TokenTrainConfig, TokenTrainer

    cfg = TokenTrainConfig(disc=str(discs["guide"]), out=str(out / "token"), name=MOTION_TOKEN.stem, model=model)
    path = out / "token" / f"{cfg.name}{SUFFIX}"

    def updates() -> int | None:
        try:
            return load_token(path).meta.get("training", {}).get("updates")
        except (TokenFileError, OSError):
            return None

    if updates() == cfg.steps:
        return path
    trainer = TokenTrainer(cfg, log=log)
    if trainer.step < cfg.steps:
        log(f"amortized token: {cfg.steps} updates x {cfg.batch} on the guiding split, from update {trainer.step}")
        trainer.run()
    if updates() != trainer.step:
        trainer.export()
    return path


def evaluation(out: Path, model: str, discs: dict, arms, size: tuple[int, int], log=print) -> dict:
    from ..evaluation.evaluate import Arm, Evaluation

    ev = Evaluation(out, model, str(discs["guide"]), str(discs["independent"]),
                    [a if isinstance(a, Arm) else Arm.parse(a) for a in arms],
                    size[0], size[1], steps=25, cfg_scale=5.0, log=log)
    total = size[0] * size[1] * (1 + len(arms))
    return ev.run(progress=lambda n, t: log(f"  {out.name}: clip {n}/{total}") if n % 10 == 0 or n == t else None)


def _cell(s: dict) -> str:
    if not s.get("n"):
        return "–"
    ci = s.get("ci95") or [float("nan")] * 2
    p = s.get("p_value")
    p_txt = "–" if p is None else (f"{p:.0e}" if p < 1e-3 else f"{p:.3f}")
    if s.get("win_rate") is None:  # a change with no better side (travel): relative to plain
        rel = f" ({s['relative']:+.1%})" if s.get("relative") is not None else ""
        return f"{s['diff_mean']:+.4f}{rel} [{ci[0]:+.4f}, {ci[1]:+.4f}] p {p_txt}"
    return f"{s['diff_mean']:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}] win {s['win_rate']:.2f} p {p_txt}"


def tables(gate: dict | None, main: dict, ablation: dict, amortized: dict | None = None) -> str:
    lines = ["# Toy-world results", "", "Written by `python -m motionprompt toy-results`; each cell: guided − plain, "
             "95 % bootstrap CI, win rate (guided better), Wilcoxon p.", ""]
    if gate is not None:
        m = gate["model"]
        verdict = "passed" if gate["passed"] else "NOT passed: the guidance numbers below do not count yet"
        lines += [f"Quality gate ({m['clips']} plain samples): object visible in {m['visible_frames']:.1%} of frames, "
                  f"prompted direction in {m['direction_ok']:.1%} of clips — {verdict}.", ""]
    parts = [("Main comparison", main), ("Amortized token (learned once, no inner loop) and hybrid", amortized),
             ("Ablations", ablation)]
    for title, summary in ((t, s) for t, s in parts if s is not None):
        lines += [f"## {title}: {summary['pairs']} paired samples, plain {summary.get('plain_seconds_mean') or 0:.1f} "
                  "s/clip", "", "| arm | time × | " + " | ".join(TABLE_METRICS) + " |",
                  "|---" * (2 + len(TABLE_METRICS)) + "|"]
        for arm, e in summary["arms"].items():
            ratio = e.get("time_ratio_mean")
            lines.append(f"| {arm} | {ratio:.2f} | " if ratio is not None else f"| {arm} | – | ")
            lines[-1] += " | ".join(_cell(e["metrics"].get(m, {})) for m in TABLE_METRICS) + " |"
        if summary.get("flow_frechet_to_real"):
            lines += ["", "Fréchet distance to real clips on flow statistics (lower = closer): " + ", ".join(
                f"{k} {v:.3f}" for k, v in summary["flow_frechet_to_real"].items())]
        kept = {a: e["kept_vs_paper"] for a, e in summary["arms"].items() if e.get("kept_vs_paper")}
        if kept:
            lines += ["", "Share of the paper preset's effect kept (independent D, warp error): " + "; ".join(
                f"{a} {_pct(k.get('d_independent'))}, {_pct(k.get('warp_error'))}" for a, k in kept.items())]
        lines.append("")
    return "\n".join(lines)


def _pct(v) -> str:
    return "–" if v is None else f"{v:.0%}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="toy", help='"toy" (shipped) or a toy model .safetensors')
    p.add_argument("--out", default="outputs/toy-results")
    p.add_argument("--skip-ablations", action="store_true", help="gate, discriminators, the main comparison and "
                   "the amortized token only")


def run(args) -> int:
    from ..evaluation.evaluate import token_arms
    from ..files.atomic import write_json, write_text
    from .gate import check
    from .model import ToyModelError, load_model, model_file

    def log(m):
        print(m, file=sys.stderr, flush=True)

    out = Path(args.out)
    try:
        parts = load_model(model_file(args.model))
    except ToyModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gate_path = out / "gate.json"
    if gate_path.is_file():
        gate = json.loads(gate_path.read_text())
    else:
        log("quality gate: plain samples of all 96 captions")
        gate = check(parts)[0]
        write_json(gate_path, gate, indent=1)
    log(f"gate {'passed' if gate['passed'] else 'NOT passed'}: visible {gate['model']['visible_frames']:.1%}, "
        f"direction {gate['model']['direction_ok']:.1%}")
    discs = discriminators(out, args.model, log)
    main = evaluation(out / "main", args.model, discs, MAIN_ARMS, MAIN_SIZE, log)
    token = motion_token(out, args.model, discs, log)
    amortized = evaluation(out / "amortized", args.model, discs, token_arms(token), MAIN_SIZE, log)
    ablation = {"pairs": 0, "arms": {}} if args.skip_ablations else \
        evaluation(out / "ablations", args.model, discs, ABLATION_ARMS, ABLATION_SIZE, log)
    text = tables(gate, main, ablation, amortized)
    write_text(out / "RESULTS.md", text)
    print(text)
    return 0
