"""Does D need flow at its trained size when the frames are smaller? The shipped toy discriminators judged
on flow at their size (64 px, 2x upscales of 32 px clips, as trained) vs flow capped at the frame size.

``python3 -m tests.bench_flow_size [--prompts 12]``

Held-out real clips vs the toy model's samples of the same captions (the evaluation's seeds); prints each
D's mean score on both (``judge.clip_probs``, the D score's own pairs) and the real-vs-generated ROC AUC per
flow size, and the time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def measure(prompts: int = 12, steps: int = 25) -> list[dict]:
    from motionprompt.disc.checkpoint import load_discriminator
    from motionprompt.engine.judge import clip_probs, plan_pairs
    from motionprompt.flow.registry import build_flow
    from motionprompt.flow.settings import FlowSettings
    from motionprompt.toy.demo import GUIDE_D, INDEPENDENT_D
    from motionprompt.toy.model import load_model, model_file
    from motionprompt.toy.protocol import caption_split, seeds
    from motionprompt.toy.sample import real_clip, sample_many
    from motionprompt.training.roc import roc_auc

    parts = load_model(model_file("toy"))
    caps = caption_split()["eval"][:prompts]
    real = [real_clip(c, s, size=parts.arch.size) for c, s in zip(caps, seeds("eval_real", len(caps)), strict=True)]
    fake = sample_many(parts, caps, seeds("eval", len(caps)), steps=steps)
    rows = []
    for role, path in (("guiding", GUIDE_D), ("independent", INDEPENDENT_D)):
        d = load_discriminator(path)
        for size in (d.flow.size, parts.arch.size):
            flow = build_flow(FlowSettings(d.flow.backend, size, d.flow.iters))

            def probs(clips, flow=flow, d=d) -> np.ndarray:
                return np.concatenate([clip_probs(lambda i, v=v: v[i], plan_pairs(len(v), 16, (1, 4)), d, flow).numpy()
                                       for v in clips])

            t = time.perf_counter()
            pr, pf = probs(real), probs(fake)
            auc = roc_auc(np.r_[pr, pf], np.r_[np.ones(len(pr)), np.zeros(len(pf))])
            rows.append({"d": role, "flow_px": size, "frame_px": parts.arch.size, "real": float(pr.mean()),
                         "generated": float(pf.mean()), "auc": auc, "seconds": time.perf_counter() - t})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for r in measure(args.prompts):
        print(f"{r['d']:12s} flow {r['flow_px']} px on {r['frame_px']} px frames: D real {r['real']:.3f} "
              f"generated {r['generated']:.3f}, AUC {r['auc']:.3f} ({r['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
