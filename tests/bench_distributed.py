"""Flows per second and training steps per second of ``train`` under torchrun with 1 and 2 processes (CPU, gloo).

``python3 -m tests.bench_distributed [--procs 1 2 --clips 16 --steps 200 --repeat 2]``

Each run starts from an empty flow cache, so the flow phase is the sharded extraction (its time is rank
0's wall time up to having every rank's flows, barrier wait included); steps per second is rank 0's
training time, validation and saves included. Process start-up (importing torch) is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _config(root: Path, steps: int):
    from motionprompt.flow.settings import FlowSettings
    from motionprompt.training.config import TrainConfig

    return TrainConfig(real=[str(root / "real")], out=str(root / "out" / "d.safetensors"),
                       flow=FlowSettings("lk_pyramid", 64, 4), synthetic=["all"],
                       arch_config={"width": 16, "depth": 4}, steps=steps, batch=32, lr=1e-3, pairs_per_clip=16,
                       val_fraction=0.25, val_every=100, save_every=10_000, cache_dir=str(root / "cache"))


def worker(root: Path, steps: int, report: Path) -> None:
    """One torchrun process: an ordinary training run; rank 0 writes its timings."""
    import torch

    from motionprompt.training.trainer import train_discriminator

    torch.set_num_threads(1)
    r = train_discriminator(_config(root, steps))
    if r.rank == 0:
        pairs = sum(r.data["samples"].values())
        report.write_text(json.dumps({"processes": r.processes, "pairs": pairs, "flow_s": r.flow_seconds,
                                      "steps": r.step, "train_s": r.seconds}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(procs: int, clips_root: Path, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "real").symlink_to(clips_root)
        report = root / "report.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_addr",
               "127.0.0.1", "--master_port", str(_free_port()), "-m", "tests.bench_distributed", "--worker",
               str(root), "--steps", str(steps), "--report", str(report)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
        r = json.loads(report.read_text())
    r["flows_per_s"] = r["pairs"] / r["flow_s"]
    r["steps_per_s"] = r["steps"] / r["train_s"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.report)
        return
    sys.path.insert(0, str(REPO))
    from tests.clip_files import synthetic_real_set

    with tempfile.TemporaryDirectory() as tmp:
        clips = synthetic_real_set(Path(tmp) / "clips", clips=args.clips, frames=24, size=96)
        rows = []
        for _ in range(args.repeat):
            for n in args.procs:
                r = measure(n, clips, args.steps)
                rows.append(r)
                print(f"{n} process(es): {r['pairs']} flows in {r['flow_s']:.1f} s = {r['flows_per_s']:.1f} flows/s; "
                      f"{r['steps']} steps in {r['train_s']:.1f} s = {r['steps_per_s']:.1f} steps/s", flush=True)
    best = {n: max((r for r in rows if r["processes"] == n), key=lambda r: r["flows_per_s"]) for n in args.procs}
    best_steps = {n: max(r["steps_per_s"] for r in rows if r["processes"] == n) for n in args.procs}
    print(json.dumps({n: {"flows_per_s": round(best[n]["flows_per_s"], 1), "steps_per_s": round(best_steps[n], 2)}
                      for n in args.procs}))


if __name__ == "__main__":
    main()
