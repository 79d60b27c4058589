"""Step-costs of the WebUI host's inner loop, full batch vs cond-only, measured in the WebUI double.

``python3 -m tests.bench_webui_path [--frames 16 --context 8 --steps 8 --iters 3 --repeat 2]``

The double's toy UNet is small next to its decode and flow, so the ratio between the two paths understates
what a real SD1.5 UNet gains; the row counts it prints are what the real host saves (UNet rows run with
gradients per iteration). One step-cost = the sampler's own [cond; uncond] step in the same job.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def _job(ui, mp, ad, steps):
    t0 = time.perf_counter()
    p, _res = ui.generate(mp, ad, steps=steps)
    return time.perf_counter() - t0, p


def measure(frames: int, context: int, steps: int, iters: int, repeat: int) -> dict:
    from motionprompt.engine.guidance import MotionGuide
    from motionprompt.hosts.webui import host as host_mod
    from motionprompt.hosts.webui import unet_path

    from .webui_host import WebUI, save_disc

    tmp = Path(tempfile.mkdtemp(prefix="mp-bench-webui-"))
    ui = WebUI(tmp)
    from .webui_double.model import ToyUNet  # ldm's UNetModel: importable once WebUI() installed the double
    save_disc(tmp / "models")
    ad = {"enable": True, "video_length": frames, "batch_size": context}
    mp = {"enabled": True, "discriminator": "disc.safetensors", "inner_iters": iters, "window_start": 0.25,
          "window_end": 0.75, "x0_mode": "cond"}
    rows: list[int] = []
    forward = ToyUNet.forward

    def counting(self, x, timesteps, context):
        if torch.is_grad_enabled():
            rows.append(x.shape[0])
        return forward(self, x, timesteps, context)

    ToyUNet.forward = counting
    guides: list = []
    init = MotionGuide.__init__

    def keep(self, *a, **k):
        init(self, *a, **k)
        guides.append(self)

    MotionGuide.__init__ = keep
    choose = host_mod.choose  # what A1111Path.predictor calls
    out: dict = {"job": {"frames": frames, "context": context, "steps": steps, "inner_iters": iters}}
    try:
        _job(ui, {"enabled": False}, ad, steps)  # warm-up
        plain = min(_job(ui, {"enabled": False}, ad, steps)[0] for _ in range(repeat))
        out["plain_step_seconds"] = step = plain / steps
        for name, forced in (("full_batch", unet_path.UNetPath(False, "bench")), ("cond_only", None)):
            host_mod.choose = (lambda *a, f=forced: f) if forced else choose
            best = None
            for _ in range(repeat):
                guides.clear()
                rows.clear()
                _job(ui, mp, ad, steps)
                recs = [r for g in guides for r in g.records if r.iterations]
                n_it = sum(len(r.iterations) for r in recs)
                seconds = sum(r.seconds for r in recs)
                phases: dict[str, float] = {}
                for r in recs:
                    for k, v in r.times.items():
                        phases[k] = phases.get(k, 0.0) + v
                cur = {"iterations": n_it, "iteration_step_costs": seconds / n_it / step,
                       "phase_step_costs": {k: v / n_it / step for k, v in phases.items()},
                       "grad_unet_rows_per_iteration": sum(rows) / n_it}
                if best is None or cur["iteration_step_costs"] < best["iteration_step_costs"]:
                    best = cur
            out[name] = best
    finally:
        ToyUNet.forward = forward
        MotionGuide.__init__ = init
        host_mod.choose = choose
    out["cond_only_vs_full"] = out["cond_only"]["iteration_step_costs"] / out["full_batch"]["iteration_step_costs"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--context", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(1)
    r = measure(a.frames, a.context, a.steps, a.iters, a.repeat)
    print(f"WebUI double, {a.frames} frames, context {a.context}: 1 step-cost = {r['plain_step_seconds']:.4f} s")
    for name in ("full_batch", "cond_only"):
        g = r[name]
        ph = ", ".join(f"{k} {v:.2f}" for k, v in sorted(g["phase_step_costs"].items()))
        print(f"  {name}: {g['iteration_step_costs']:.2f} step-costs per iteration "
              f"({g['grad_unet_rows_per_iteration']:.0f} UNet rows with grad; {ph})")
    print(f"  cond-only / full batch: x{r['cond_only_vs_full']:.2f}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
