"""Training under torchrun: 2 gloo processes on CPU train like one, write once, resume across world sizes, die cleanly.

Ranks are forked from the test process (the parent has torch imported already: a spawned rank would
spend ~10 s importing it again on this 2-core machine); one test goes through the real ``torchrun``.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors import safe_open

from motionprompt.cli.main import main
from motionprompt.disc.checkpoint import load_discriminator, read_metadata
from motionprompt.flow.settings import FlowSettings
from motionprompt.training.batches import StepBatches
from motionprompt.training.config import TrainConfig, TrainError, side_paths
from motionprompt.training.dataset import FlowSet
from motionprompt.training.distributed import Group
from motionprompt.training.trainer import train_discriminator

from .clip_files import synthetic_real_set

REPO = Path(__file__).resolve().parents[1]
JOBS = 12  # 6 real clips + their 6 synthetic-negative jobs
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cfg_for(real, out, cache, **kw) -> TrainConfig:
    base = {"flow": FlowSettings("lk_pyramid", 32, 3), "synthetic": ["all"], "arch_config": {"width": 8, "depth": 3},
            "steps": 8, "batch": 16, "lr": 1e-3, "pairs_per_clip": 8, "val_fraction": 0.34, "val_every": 4,
            "save_every": 4, "cache_dir": str(cache)}
    base.update(kw)
    return TrainConfig(real=[str(real)], out=str(out), **base)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weights(path) -> dict:
    return load_discriminator(path).model.state_dict()


# The first conv's bias feeds a GroupNorm of one channel per group, which subtracts it again: its gradient
# is 0 up to float noise, and AdamW scales that noise to lr-sized steps of random sign. It cannot change
# the output, so runs that differ only in summation order (2 processes vs 1) are compared without it.
NO_EFFECT = {"features.0.bias"}


def assert_close(a_path, b_path, atol: float = 1e-5) -> float:
    """Same discriminator up to float summation order: weights and logits on fixed flows."""
    a, b = load_discriminator(a_path).model, load_discriminator(b_path).model
    sa, sb = a.state_dict(), b.state_dict()
    worst = max((sa[k] - sb[k]).abs().max().item() for k in sa if k not in NO_EFFECT)
    assert worst < atol, worst
    flows = 0.05 * torch.randn(16, 2, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        la, lb = a(flows), b(flows)
    assert (la - lb).abs().max().item() < 10 * atol and (la - lb).abs().max().item() < 1e-3 * la.abs().max().item()
    return worst


# -- the rank process --------------------------------------------------------------------------------------


def _rank(rank: int, world: int, port: int, cfg: TrainConfig, record: Path, die: str) -> None:
    """One torchrun-like process: the env vars torchrun sets, then the ordinary ``train_discriminator``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import safetensors.torch

    import motionprompt.files.atomic as atomic

    writes: list[str] = []
    real_write, real_save = atomic.atomic_write, safetensors.torch.save_file

    def recording_write(path, write):
        writes.append(os.path.abspath(path))
        return real_write(path, write)

    def dying_save(tensors, filename, metadata=None):  # the 2nd flow shard of rank 1 is cut off mid-write
        if die == "rank1-flow-write" and rank == 1 and len(writes) == 2:
            with open(filename, "wb") as f:
                f.write(b"half a shard")
            os._exit(137)
        real_save(tensors, filename, metadata=metadata)

    def progress(step, total, metrics, eta):  # only rank 0 gets progress calls
        if rank != 0:
            raise AssertionError("progress reported by a rank other than 0")
        if die == "rank0-step6" and metrics["phase"] == "train" and step == 6:
            os._exit(137)

    import motionprompt.training.trainer as trainer

    real_build, seen = trainer.build_discriminator, []

    def counting_build(arch, **kw):  # how many samples each forward of this rank's model takes
        model = real_build(arch, **kw)
        model.register_forward_pre_hook(lambda m, args: seen.append(["train" if m.training else "eval",
                                                                     args[0].shape[0]]))
        return model

    trainer.build_discriminator = counting_build
    atomic.atomic_write = recording_write
    safetensors.torch.save_file = dying_save
    r = train_discriminator(cfg, progress=progress)
    record.joinpath(f"rank{rank}.json").write_text(json.dumps({
        "writes": writes, "seen": seen, "loss": r.history.loss, "acc": r.history.train_acc, "val": r.history.val,
        "cache": r.cache, "processes": r.processes, "rank": r.rank, "step": r.step, "resumed_from": r.resumed_from,
    }))


class RanksFailed(Exception):
    def __init__(self, exitcodes: list[int]):
        super().__init__(f"exit codes {exitcodes}")
        self.exitcodes = exitcodes


def run_ranks(cfg: TrainConfig, record: Path, world: int = 2, die: str = "", limit_s: float = 240) -> list[dict]:
    """Fork ``world`` ranks; their records, or ``RanksFailed`` with every rank's exit code."""
    record.mkdir(parents=True, exist_ok=True)
    ctx = mp.start_processes(_rank, (world, free_port(), cfg, record, die), nprocs=world, join=False,
                             start_method="fork")
    deadline = time.monotonic() + limit_s
    failed = False
    try:
        while not ctx.join(5):
            if time.monotonic() > deadline:
                raise TimeoutError(f"ranks still running after {limit_s} s")
    except (mp.ProcessExitedException, mp.ProcessRaisedException):  # join terminated the surviving ranks
        failed = True
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
            p.join()
    if failed:
        raise RanksFailed([p.exitcode for p in ctx.processes])
    return [json.loads(record.joinpath(f"rank{r}.json").read_text()) for r in range(world)]


# -- fixtures: one 2-process run and single-process references, shared by the tests ----------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return synthetic_real_set(tmp_path_factory.mktemp("dist_real"), clips=6, frames=10, size=48)


@pytest.fixture(scope="module")
def single(real, tmp_path_factory):
    """Single-process runs of ``steps`` steps, computed once each."""
    root = tmp_path_factory.mktemp("single")
    runs = {}

    def get(steps: int):
        if steps not in runs:
            torch.set_num_threads(1)
            runs[steps] = train_discriminator(cfg_for(real, root / f"s{steps}.safetensors", root / "cache", steps=steps))
        return runs[steps]

    return get


@pytest.fixture(scope="module")
def two_ranks(real, tmp_path_factory):
    root = tmp_path_factory.mktemp("two_ranks")
    cfg = cfg_for(real, root / "out" / "d.safetensors", root / "cache")
    return cfg, run_ranks(cfg, root / "record")


# -- tests ---------------------------------------------------------------------------------------------------


def test_ranks_shares_of_each_global_batch_are_the_single_process_batch():
    g = torch.Generator().manual_seed(0)
    n = 40
    data = FlowSet(torch.randn(n, 2, 4, 4, generator=g).half(), (torch.arange(n) % 3 == 0).float(),
                   torch.arange(n) >= 32, torch.zeros(n, dtype=torch.int64), ["x"], [], {})
    one = StepBatches(data, 12, seed=5)
    for world in (2, 3, 4):
        shares = [StepBatches(data, 12, 5, share=Group(r, world).share(12)) for r in range(world)]
        assert [len(s.labels) for s in shares] == [12 // world] * world
        for step in (0, 1, 17):
            x, y = one(step)
            parts = [s(step) for s in shares]
            assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    assert not torch.equal(one(0)[0], one(1)[0])  # steps differ: the shares above were not trivially equal


def test_uneven_shares_cover_everything_once_in_rank_order():
    for n in (0, 1, 7, 10):
        for world in (1, 2, 3):
            ranges = [Group(r, world).share(n) for r in range(world)]
            assert [i for rg in ranges for i in rg] == list(range(n))
            assert max(map(len, ranges)) - min(map(len, ranges)) <= 1


def test_batch_that_does_not_split_over_the_processes_is_refused(real, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TrainError, match=r"--batch 15 is the global batch .* multiple of 2"):
        train_discriminator(cfg_for(real, tmp_path / "d.safetensors", tmp_path / "cache", batch=15))
    assert not (tmp_path / "cache").exists()  # refused before any flow or process group


def test_two_processes_train_like_one_with_the_same_seed_and_global_batch(two_ranks, single):
    cfg, ranks = two_ranks
    ref = single(8)
    assert [r["processes"] for r in ranks] == [2, 2] and [r["step"] for r in ranks] == [8, 8]
    worst = assert_close(cfg.out, ref.checkpoint)
    print(f"largest weight difference 2 processes vs 1: {worst:.2e}")
    for r in ranks:  # every rank holds the reduced (global) numbers, not its own share's
        assert r["loss"] == pytest.approx(ref.history.loss, rel=1e-4, abs=1e-5)
        assert r["acc"] == pytest.approx(ref.history.train_acc, abs=1e-6)
        assert [v["step"] for v in r["val"]] == [4, 8]
        for mine, theirs in zip(r["val"], ref.history.val, strict=True):  # gathered logits: all val samples
            assert mine["acc"] == pytest.approx(theirs["acc"]) and mine["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
            assert mine["auc"] == pytest.approx(theirs["auc"], abs=1e-6)
    assert ranks[0]["loss"] == ranks[1]["loss"]
    for r in ranks:  # each rank's forward takes its half of the global batch, and of the validation set
        assert [n for phase, n in r["seen"] if phase == "train"] == [8] * 8
    val_n = sum(ref.data["val_samples"].values())
    evals = [[n for phase, n in r["seen"] if phase == "eval"] for r in ranks]
    assert len(evals[0]) == len(evals[1]) == 2 and [a + b for a, b in zip(*evals, strict=True)] == [val_n] * 2
    assert abs(evals[0][0] - evals[1][0]) <= 1
    assert read_metadata(cfg.out)["training"]["processes"] == 2


def test_flows_are_split_between_ranks_and_only_rank_0_writes_the_run_files(two_ranks):
    cfg, ranks = two_ranks
    cache, out_dir = Path(cfg.cache_dir).resolve(), Path(cfg.out).resolve().parent
    shards = [{p for p in r["writes"] if Path(p).parent == cache} for r in ranks]
    assert len(shards[0]) == len(shards[1]) == JOBS // 2 and not shards[0] & shards[1]  # disjoint halves
    assert shards[0] | shards[1] == {str(p) for p in cache.glob("*.safetensors")}
    assert all(r["cache"]["computed"] == JOBS and r["cache"]["reused"] == 0 for r in ranks)  # summed over ranks
    assert not [p for p in ranks[1]["writes"] if Path(p).parent != cache]  # rank 1 wrote no run file
    run_files = sorted(Path(p).name for p in ranks[0]["writes"] if Path(p).parent == out_dir)
    assert run_files == ["d.csv"] * 2 + ["d.resume.safetensors"] * 2 + ["d.safetensors"] * 2  # steps 4 and 8
    assert sorted(p.name for p in out_dir.iterdir()) == ["d.csv", "d.resume.safetensors", "d.safetensors"]
    with open(side_paths(cfg.out)["csv"]) as f:
        assert len(f.read().splitlines()) == 1 + 8


def test_a_run_of_two_processes_resumes_in_one(two_ranks, single, tmp_path):
    cfg, _ = two_ranks
    out = tmp_path / "d.safetensors"
    for src, dst in ((cfg.out, out), (side_paths(cfg.out)["resume"], side_paths(out)["resume"])):
        dst.write_bytes(Path(src).read_bytes())
    with safe_open(str(side_paths(out)["resume"]), "pt") as f:
        meta = f.metadata()
    assert meta["step"] == "8" and meta["global_batch"] == "16" and meta["processes"] == "2"
    r = train_discriminator(cfg_for(Path(cfg.real[0]), out, cfg.cache_dir, steps=12, resume=True))
    assert r.resumed_from == 8 and r.step == 12 and r.processes == 1 and r.cache["flow_calls"] == 0
    assert_close(out, single(12).checkpoint)
    assert r.history.loss == pytest.approx(single(12).history.loss, rel=1e-4, abs=1e-5)


def test_a_run_of_one_process_resumes_in_two(real, single, tmp_path):
    out = tmp_path / "d.safetensors"
    first = train_discriminator(cfg_for(real, out, tmp_path / "cache", steps=4))
    assert first.step == 4
    a = weights(single(4).checkpoint)
    assert all(torch.equal(a[k], v) for k, v in weights(out).items())  # one process is bit-reproducible
    ranks = run_ranks(cfg_for(real, out, tmp_path / "cache", steps=8, resume=True), tmp_path / "record")
    assert [r["resumed_from"] for r in ranks] == [4, 4] and [r["step"] for r in ranks] == [8, 8]
    assert all(r["cache"]["computed"] == 0 and r["cache"]["reused"] == JOBS for r in ranks)
    assert_close(out, single(8).checkpoint)


def test_a_rank_killed_while_writing_a_flow_shard_leaves_no_half_written_shard(real, single, tmp_path):
    cfg = cfg_for(real, tmp_path / "out" / "d.safetensors", tmp_path / "cache")
    with pytest.raises(RanksFailed) as failed:
        run_ranks(cfg, tmp_path / "record", die="rank1-flow-write")
    assert failed.value.exitcodes[1] == 137 and failed.value.exitcodes[0] != 0
    cache = tmp_path / "cache"
    shards = sorted(cache.glob("*.safetensors"))
    assert 1 <= len(shards) < JOBS
    for p in shards:  # every shard under its final name is complete
        with safe_open(str(p), "pt") as f:
            assert f.metadata()["format"] == "motionprompt.flowshard" and f.get_tensor("flow").numel() > 0
    # the cut-off write never got a shard's name; rank 0, terminated when rank 1 died, may have been cut off
    # mid-write too (where the signal lands is timing): its leftover is a .tmp as well, never a shard
    orphans = list(cache.glob(".*.tmp"))
    assert b"half a shard" in [p.read_bytes() for p in orphans] and len(orphans) <= 2
    assert not (tmp_path / "out").exists()  # no training started, no run file
    old = time.time() - 2 * 3600
    for p in orphans:
        os.utime(p, (old, old))
    r = train_discriminator(cfg)  # one process finishes what two started
    assert r.cache["computed"] == JOBS - len(shards) and r.cache["reused"] == len(shards)
    assert not list(cache.glob(".*.tmp"))  # the dead rank's orphan was swept
    ref = weights(single(8).checkpoint)
    assert all(torch.equal(ref[k], v) for k, v in weights(cfg.out).items())


def test_a_rank_killed_mid_training_leaves_the_last_save_resumable(real, single, tmp_path):
    cfg = cfg_for(real, tmp_path / "d.safetensors", tmp_path / "cache")
    with pytest.raises(RanksFailed) as failed:
        run_ranks(cfg, tmp_path / "record", die="rank0-step6")
    assert failed.value.exitcodes[0] == 137 and failed.value.exitcodes[1] != 0
    paths = side_paths(cfg.out)
    assert read_metadata(cfg.out)["training"]["step"] == 4
    with open(paths["csv"]) as f:
        assert len(f.read().splitlines()) == 1 + 4
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    r = train_discriminator(cfg_for(real, cfg.out, tmp_path / "cache", resume=True))
    assert r.resumed_from == 4 and r.step == 8
    assert_close(cfg.out, single(8).checkpoint)


def test_the_cli_runs_unchanged_under_torchrun(real, tmp_path, capsys):
    common = ["--real", str(real), "--synthetic", "all", "--flow-backend", "lk_pyramid", "--flow-size", "32",
              "--flow-iters", "2", "--width", "8", "--steps", "6", "--batch", "8", "--pairs-per-clip", "4",
              "--val-every", "3"]
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    assert main(["train", *common, "--out", str(one), "--cache", str(tmp_path / "c1")]) == 0
    capsys.readouterr()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), "-m", "motionprompt", "train", *common, "--out", str(two),
         "--cache", str(tmp_path / "c2")],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1 and proc.stdout.count("validation @ step 6") == 1  # rank 0 reports
    assert "2 processes" in proc.stderr
    meta = read_metadata(two)["training"]
    assert meta["step"] == 6 and meta["processes"] == 2
    assert_close(two, one)
