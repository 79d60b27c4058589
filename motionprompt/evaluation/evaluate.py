"""``python -m motionprompt evaluate``: plain vs guided from the same seeds on held-out prompts.

Every (prompt, seed) is sampled once plain and once per *arm* (a preset plus optional overrides, e.g.
``K1=paper:inner_iters=1``) through the production path on the diffusers reference host. Each clip is
measured by the guiding discriminator, an independent one (trained on a disjoint split with another seed:
guards against merely fooling the guiding D), weight-free metrics, and the ground truth of the model's world
(``hosts.diffusers.sources.World``: the toy world's, which ``motionprompt.toy`` registers); the
sets are compared to real clips of the same captions with a Fréchet distance on flow statistics. Results
are paired per sample (``paired.py``). Rows are saved after every clip, so an interrupted run resumes
where it stopped; the summary is recomputed from all rows at the end.

Amortized tokens (``token-train``): an arm ``token=FILE`` starts its tokens from the file; ``plain:token=FILE``
samples with that token appended at every step and no inner loop. ``--token FILE`` adds both (``amortized``,
``hybrid`` with K=1) to the per-sample arm(s): plain, amortized, hybrid and per-sample in one run.

Flow policy (``flow_policy.resolve_flow``, as in the WebUI and CLI): guidance computes flow as the guiding
discriminator was trained (backend, size, iterations from its checkpoint); an arm may ask for other
``flow.iters`` explicitly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..engine.records import json_safe
from ..hosts.diffusers.sources import load_source, model_world, weights_file
from .measures import METRICS
from .paired import kept_fraction, paired_stats

METRIC_SIDE = 64  # weight-free metrics on 32-px clips run on 2x bilinear upscales (DIS needs the room)


@dataclasses.dataclass
class Arm:
    name: str
    preset: str
    overrides: dict

    @classmethod
    def parse(cls, text: str) -> Arm:
        """``paper`` | ``NAME=PRESET`` | ``NAME=PRESET:key=value,key=value`` (``flow.iters=3`` for flow).

        ``token=FILE``: tokens start from an amortized token file (``token-train``) instead of the init word;
        preset ``plain`` = no inner loop, that token appended as it is (``amortized=plain:token=FILE``)."""
        name, _, rest = text.partition("=") if "=" in text.split(":")[0] else (text, "", text)
        preset_name, _, spec = rest.partition(":")
        overrides = {}
        for item in filter(None, spec.split(",")):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"arm {text!r}: expected key=value, got {item!r}")
            overrides[key.strip()] = _parse_value(value.strip())
        return cls(name.strip(), preset_name.strip() or name.strip(), overrides)

    def config(self, disc):
        from ..amortized.token_file import with_start_token
        from ..engine.config import preset
        from ..flow.policy import resolve_flow

        flat = {k: v for k, v in self.overrides.items() if not k.startswith("flow.") and k != "token"}
        if self.preset == "plain":  # plain sampling with the arm's token appended: the amortized token as it is
            if not self.overrides.get("token"):
                raise ValueError(f"arm {self.name}: a 'plain' arm samples with a token: add token=FILE")
            if flat.pop("inner_iters", 0):
                raise ValueError(f"arm {self.name}: a 'plain' arm has no inner loop (use paper:token=FILE for a hybrid)")
            cfg = preset("paper", inner_iters=0, **flat)
        else:
            cfg = preset(self.preset, **flat)
        flow = {k[5:]: v for k, v in self.overrides.items() if k.startswith("flow.")}
        if set(flow) - {"iters"}:
            raise ValueError(f"arm {self.name}: only flow.iters may be overridden (the D fixes backend and size)")
        cfg.flow = resolve_flow(disc.flow, cfg.flow, iters=flow.get("iters")).settings
        return with_start_token(cfg, self.overrides.get("token")).validate()


def _parse_value(v: str):
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def clip_metrics(frames: np.ndarray, prompt: str, discs: dict, flows: dict, world) -> dict:
    """A clip's measures: both discriminators, the weight-free metrics, flow statistics, and the ground truth of
    ``world`` (``hosts.diffusers.sources.World``) where it writes ``prompt`` (None for each of its measures else)."""
    from .flowstats import flow_features, resize_short_side
    from .metrics import disc_score, video_metrics

    out = {}
    for name, disc in discs.items():
        out[name] = disc_score(frames, disc, flow=flows[name], pairs=15, gap=1) if disc is not None else None
    big = resize_short_side(frames, METRIC_SIDE) if min(frames.shape[1:3]) < METRIC_SIDE else frames
    vm = video_metrics(big, short_side=None)
    out.update({k: vm[k] for k in ("warp_error", "flicker", "smoothness", "motion_px")})
    if world.writes(prompt):
        out.update(world.truth(frames, prompt))
    else:  # no ground truth for a prompt of one's own that is not a caption of the world
        out.update(dict.fromkeys(world.truth_keys))
    out["flow_features"] = [float(x) for x in flow_features(frames)]
    return out


def summarize(rows: list[dict], arms: list[str], real_features: list | None = None) -> dict:
    from .flowstats import standardised_distance

    by_key = {(r["prompt"], r["seed"], r["arm"]): r for r in rows}
    pairs = sorted({(r["prompt"], r["seed"]) for r in rows})
    summary: dict = {"pairs": len(pairs), "arms": {}}
    plain_secs = [by_key[(p, s, "plain")]["seconds"] for p, s in pairs if (p, s, "plain") in by_key]
    for arm in arms:
        both = [(by_key[(p, s, "plain")], by_key[(p, s, arm)]) for p, s in pairs
                if (p, s, "plain") in by_key and (p, s, arm) in by_key]
        stats = {}
        for metric, higher in METRICS.items():
            a = [_num(pl["metrics"].get(metric)) for pl, _ in both]
            b = [_num(gd["metrics"].get(metric)) for _, gd in both]
            stats[metric] = paired_stats(a, b, higher_is_better=higher)
        secs = [gd["seconds"] / max(pl["seconds"], 1e-9) for pl, gd in both]
        entry = {"n": len(both), "metrics": stats, "time_ratio_mean": float(np.mean(secs)) if secs else None,
                 "guided_seconds_mean": float(np.mean([gd["seconds"] for _, gd in both])) if both else None,
                 "token_drift_mean": float(np.mean([gd["guide"]["token_drift"] for _, gd in both])) if both else None,
                 "disabled": sorted({gd["guide"]["disabled"] for _, gd in both if gd["guide"].get("disabled")})}
        summary["arms"][arm] = entry
    summary["plain_seconds_mean"] = float(np.mean(plain_secs)) if plain_secs else None
    if real_features is not None and len(real_features) >= 3:
        dist = {}
        for arm in ["plain", *arms]:
            feats = [r["metrics"]["flow_features"] for r in rows if r["arm"] == arm]
            if len(feats) >= 3:
                dist[arm] = standardised_distance(np.array(real_features), np.array(feats))
        summary["flow_frechet_to_real"] = dist
    if "paper" in summary["arms"]:
        ref = summary["arms"]["paper"]["metrics"]
        for arm, entry in summary["arms"].items():
            if arm != "paper":
                entry["kept_vs_paper"] = {m: kept_fraction(entry["metrics"][m], ref[m]) for m in METRICS}
    return json_safe(summary)


def _sha256(path) -> str | None:
    from ..amortized.token_file import file_sha256

    try:
        return file_sha256(path)
    except OSError:
        return None


def _num(v):
    if isinstance(v, bool):
        return float(v)
    return float("nan") if v is None else float(v)


class Evaluation:
    """``prompts`` / ``seed_list``: one's own cases instead of the first ``n_prompts`` held-out captions / the
    protocol's first ``n_seeds`` evaluation seeds (every prompt is sampled with every seed)."""

    def __init__(self, out: str | Path, model: str, disc: str, independent: str | None, arms: list[Arm],
                 n_prompts: int, n_seeds: int, steps: int, cfg_scale: float, n_real: int = 3, log=print,
                 prompts: list[str] | None = None, seed_list: list[int] | None = None):
        self.out = Path(out)
        self.arms, self.steps, self.cfg_scale, self.log = arms, steps, cfg_scale, log
        self.n_prompts, self.n_seeds, self.n_real = n_prompts, n_seeds, n_real
        self.prompts = list(prompts) if prompts is not None else None
        self.seed_list = [int(s) for s in seed_list] if seed_list is not None else None
        self.model_path, self.disc_path, self.indep_path = model, disc, independent
        self.world = model_world(model)
        if self.world is None:
            raise ValueError(f"model {model!r}: evaluate samples a model that comes with a world of captions, seeds "
                             "and ground truth (a toy model)")
        self.rows_path = self.out / "samples.json"
        self.rows: list[dict] = []
        if self.rows_path.is_file():
            data = json.loads(self.rows_path.read_text())
            if data.get("setup") != self.setup():
                raise ValueError(f"{self.rows_path} holds an evaluation with other settings; choose another --out")
            self.rows = data["rows"]

    def setup(self) -> dict:
        """What makes two evaluations the same: weights by content (a copy elsewhere is the same evaluation, a
        file retrained in place is another one), arms, sizes and sampler settings."""
        def weights(spec) -> str:
            path = None if spec is None else weights_file(spec)
            return f"sha256:{_sha256(path)}" if path is not None and path.is_file() else str(spec)

        out = {"model": weights(self.model_path), "disc": weights(self.disc_path),
               "independent": weights(self.indep_path),
               "arms": [dataclasses.asdict(a) for a in self.arms],
               "prompts": self.n_prompts if self.prompts is None else self.prompts,
               "seeds": self.n_seeds if self.seed_list is None else self.seed_list,
               "steps": self.steps, "cfg_scale": self.cfg_scale}
        tokens = {a.name: _sha256(a.overrides["token"]) for a in self.arms if a.overrides.get("token")}
        if tokens:  # a retrained token under the same path is another evaluation
            out["tokens"] = tokens
        return out

    def work(self) -> list[tuple[str, int]]:
        """The (prompt, seed) pairs, prompts in order, every prompt with the same seeds."""
        prompts = self.prompts if self.prompts is not None else self.world.captions("eval")[: self.n_prompts]
        seed_list = self.seed_list if self.seed_list is not None else self.world.seeds("eval", self.n_seeds)
        return [(p, s) for p in prompts for s in seed_list]  # by default the README's tables

    def _save_rows(self) -> None:
        from ..files.atomic import write_json

        write_json(self.rows_path, json_safe({"setup": self.setup(), "rows": self.rows}), indent=None)

    def run(self, progress=None, stop=lambda: False) -> dict:
        import torch

        from ..amortized.token_file import start_tokens
        from ..disc.checkpoint import load_discriminator
        from ..engine.guidance import MotionGuide
        from ..files.video import save_gif
        from ..flow.registry import build_flow
        from ..hosts.diffusers.host import DiffusersVideoHost
        from ..hosts.diffusers.sampler import sample
        source = load_source(self.model_path)
        vm = source.model
        discs = {"d_guide": load_discriminator(self.disc_path),
                 "d_independent": load_discriminator(self.indep_path) if self.indep_path else None}
        flows = {k: build_flow(d.flow) for k, d in discs.items() if d is not None}  # the metrics' flows
        guide_flows: dict = {}  # an arm's own flow settings (e.g. flow.iters=3) guide its clips
        configs = {a.name: a.config(discs["d_guide"]) for a in self.arms}
        work = self.work()
        done = {(r["prompt"], r["seed"], r["arm"]) for r in self.rows}
        arm_names = ["plain", *configs]
        total = len(work) * len(arm_names)
        size, frames = source.size, source.frames
        hosts: dict = {}
        for i, (prompt, seed) in enumerate(work):
            for arm in arm_names:
                if (prompt, seed, arm) in done:
                    continue
                if stop():
                    self._save_rows()
                    return {}
                cfg = configs.get(arm)
                n_tokens = cfg.n_tokens if cfg else 1
                if (prompt, n_tokens) not in hosts:  # a host encodes its prompt and "" once, when built
                    hosts[(prompt, n_tokens)] = DiffusersVideoHost(vm, prompt, "", n_tokens)
                host = hosts[(prompt, n_tokens)]
                guide = None
                if cfg is not None:
                    torch.manual_seed(0)
                    key = repr(cfg.flow)
                    if key not in guide_flows:
                        guide_flows[key] = build_flow(cfg.flow)
                    start = {"start_tokens": start_tokens(cfg)} if cfg.start_token else {}  # an arm's token file
                    guide = MotionGuide(cfg, host, guide_flows[key], discs["d_guide"], **start)
                res = sample(host, guide, steps=self.steps, cfg_scale=self.cfg_scale, seed=seed, num_frames=frames,
                             height=size, width=size)
                clip = res.frames.numpy()
                row = {"prompt": prompt, "seed": seed, "arm": arm, "seconds": res.seconds,
                       "metrics": clip_metrics(clip, prompt, discs, flows, self.world),
                       "guide": guide.summary() if guide else {}}
                self.rows.append(row)
                if i < 4:
                    save_gif(clip, self.out / "clips" / f"{i:02d}_{arm}.gif", fps=8)
                self._save_rows()
                if progress:
                    progress(len(self.rows), total)
        real = [self.world.real_clip(p, s, size) for p in sorted({p for p, _ in work}) if self.world.writes(p)
                for s in self.world.seeds("eval_real", self.n_real)]
        from .flowstats import flow_features

        real_feats = [flow_features(c).tolist() for c in real]
        summary = summarize(self.rows, list(configs), real_feats)
        summary["setup"] = self.setup()
        summary["torch_threads"] = torch.get_num_threads()  # the time ratios depend on it
        from ..files.atomic import write_json

        write_json(self.out / "summary.json", summary, indent=1)
        from .report import write_report

        write_report(self.out, summary, self.rows)
        return summary


def format_summary(summary: dict) -> str:
    lines = [f"{summary['pairs']} paired samples; plain sampling {summary.get('plain_seconds_mean') or 0:.1f} s/clip"]
    for arm, e in summary["arms"].items():
        lines.append(f"\n[{arm}] n={e['n']} time x{e['time_ratio_mean'] or float('nan'):.2f}, "
                     f"token drift {e['token_drift_mean'] or 0:.3f}" + (f", disabled: {e['disabled']}" if e["disabled"] else ""))
        lines.append(f"  {'metric':<14} {'plain':>9} {'guided':>9} {'diff':>9} {'95% CI':>21} {'win':>5} {'p':>8}")
        for m, s in e["metrics"].items():
            if not s["n"]:
                continue
            ci = s["ci95"] or [float("nan")] * 2
            win = "-" if s["win_rate"] is None else f"{s['win_rate']:.2f}"
            rel = f" ({s['relative']:+.1%})" if m == "displacement" and s.get("relative") is not None else ""
            lines.append(f"  {m:<14} {s['plain_mean']:>9.4f} {s['guided_mean']:>9.4f} {s['diff_mean']:>+9.4f} "
                         f"[{ci[0]:>+8.4f},{ci[1]:>+8.4f}] {win:>5} {_p(s['p_value']):>8}{rel}")
    if summary.get("flow_frechet_to_real"):
        lines.append("\nFréchet distance to real clips on flow statistics (lower = closer): " + ", ".join(
            f"{k} {v:.3f}" for k, v in summary["flow_frechet_to_real"].items()))
    return "\n".join(lines)


def _p(p) -> str:
    return "-" if p is None else (f"{p:.1e}" if p < 1e-3 else f"{p:.3f}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="toy", help='"toy" (the shipped toy model) or a toy model .safetensors')
    p.add_argument("--disc", required=True, help="guiding discriminator .safetensors")
    p.add_argument("--independent-disc", help="a second discriminator trained on a disjoint split (recommended)")
    p.add_argument("--arm", action="append", default=[], metavar="SPEC",
                   help="guided arm: PRESET, or NAME=PRESET:key=value,... (repeatable; default: paper and fast); "
                   "token=FILE starts from an amortized token, preset plain = that token with no inner loop")
    p.add_argument("--token", metavar="FILE", help="an amortized token (token-train): adds the arms "
                   "amortized=plain:token=FILE and hybrid=paper:token=FILE,inner_iters=1 (with --arm: to those arms; "
                   "without: to paper)")
    cases = p.add_argument_group("cases (default: the first --prompts of the 24 held-out captions x the protocol's "
                                 "first --seeds evaluation seeds, as the README's tables)")
    which = cases.add_mutually_exclusive_group()
    which.add_argument("--prompts", type=int, default=24, help="held-out prompts (of 24)")
    which.add_argument("--prompt-file", metavar="FILE", help="your own prompts, one a line (# comments); captions "
                       "the toy world does not write get no ground-truth measures and no real reference clips")
    seeds = cases.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, default=3, help="seeds per prompt")
    seeds.add_argument("--seed-list", metavar="SEEDS", help="your own sampling seeds, every prompt with each: "
                       "e.g. 7,8,100-109")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--out", default="outputs/evaluate")


def run_arms(arms: list[str], token: str | None = None) -> list[Arm]:
    """The arms of a run: ``--arm`` specs (default paper and fast), and with ``--token`` the amortized and hybrid
    arms of that token beside the per-sample one(s) (default paper alone)."""
    if not token:
        return [Arm.parse(a) for a in (list(arms) or ["paper", "fast"])]
    return [*(Arm.parse(a) for a in (arms or ["paper"])), *token_arms(token)]


def token_arms(token) -> list[Arm]:
    """An amortized token's two arms: as it is (no inner loop, x1 time) and as the start of one inner iteration.
    Built, not parsed: a token path may hold the spec's separators (',' and ':')."""
    return [Arm("amortized", "plain", {"token": str(token)}), Arm("hybrid", "paper", {"token": str(token), "inner_iters": 1})]


def run(args) -> int:
    from tqdm import tqdm

    try:
        arms = run_arms(args.arm, getattr(args, "token", None))
        from ..amortized.token_file import token_count

        for arm in arms:  # a missing or foreign token file fails here, not after the first clips
            if arm.overrides.get("token"):
                token_count(arm.overrides["token"])
        from .cases import parse_seed_list, read_prompt_file

        prompts = read_prompt_file(args.prompt_file) if getattr(args, "prompt_file", None) else None
        seed_list = parse_seed_list(args.seed_list) if getattr(args, "seed_list", None) else None
        ev = Evaluation(args.out, args.model, args.disc, args.independent_disc, arms, args.prompts, args.seeds,
                        args.steps, args.cfg, prompts=prompts, seed_list=seed_list)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar = tqdm(total=len(ev.work()) * (1 + len(arms)), initial=len(ev.rows), desc="evaluate",
               file=sys.stderr, dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        summary = ev.run(progress=lambda n, total: bar.update(n - bar.n))
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted: {len(ev.rows)} clip(s) saved in {ev.rows_path}; run the same command to resume",
              file=sys.stderr)
        return 130
    bar.close()
    print(format_summary(summary))
    print(f"wrote {args.out}/summary.json, report.html ({time.perf_counter() - t0:.0f} s)")
    return 0
