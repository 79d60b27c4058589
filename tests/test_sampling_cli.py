"""Issue 26 items 10 and 11: ``generate``'s model-specific defaults and lossless frames, and ``--threads`` with one
default on every command that samples."""

import json
import os

import numpy as np
import pytest
import torch

from motionprompt.cli.main import build_parser, main
from motionprompt.toy.model import ToyArch, build, save_model, set_latent_stats

ARCH = ToyArch(size=16, frames=4, unet_channels=(16, 32), vae_channels=(16, 16), text_width=16, text_layers=1)


@pytest.fixture
def toy_file(tmp_path):
    parts = build(ARCH, seed=0)
    set_latent_stats(parts, mean=0.3, std=2.0)
    return save_model(parts, tmp_path / "toy.safetensors", dtype=torch.float32)


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _record(out) -> dict:
    return json.loads((out / "record.json").read_text())


@pytest.mark.diffusers
def test_generate_on_a_toy_model_defaults_to_the_toy_tables_settings_and_a_given_flag_wins(tmp_path, toy_file,
                                                                                           keep_threads):
    """Issue 26 item 10: `generate --model toy` sampled at CFG 7.5 (and 16 frames) where every toy table uses 5."""
    from motionprompt.toy.sample import DEFAULT_CFG, DEFAULT_STEPS

    assert main(["generate", "--model", str(toy_file), "--no-guidance", "--out", str(tmp_path / "a")]) == 0
    sampling = _record(tmp_path / "a")["sampling"]
    assert sampling == {"steps": DEFAULT_STEPS, "cfg_scale": DEFAULT_CFG, "seed": 0, "num_frames": ARCH.frames,
                        "height": ARCH.size, "width": ARCH.size}
    assert (DEFAULT_CFG, DEFAULT_STEPS) == (5.0, 25)  # what the toy tables, the gate and toy-disc's data use
    argv = ["generate", "--model", str(toy_file), "--no-guidance", "--cfg", "7.5", "--steps", "2", "--frames", "3",
            "--height", "8", "--out", str(tmp_path / "b")]
    assert main(argv) == 0
    sampling = _record(tmp_path / "b")["sampling"]
    assert (sampling["cfg_scale"], sampling["steps"], sampling["num_frames"], sampling["height"], sampling["width"]) \
        == (7.5, 2, 3, 8, ARCH.size)
    # other models keep theirs
    assert main(["generate", "--model", "tiny", "--no-guidance", "--steps", "1", "--frames", "2",
                 "--out", str(tmp_path / "c")]) == 0
    sampling = _record(tmp_path / "c")["sampling"]
    assert (sampling["cfg_scale"], sampling["height"], sampling["width"]) == (7.5, 64, 64)


@pytest.mark.diffusers
def test_frames_out_writes_the_exact_frames_beside_the_gif_as_npy_or_png(tmp_path, toy_file, keep_threads):
    """Issue 26 item 10: only GIFs were written (a palette: a few grey levels off); --frames-out npy|png."""
    from PIL import Image

    from motionprompt.files.video import load_gif

    base = ["generate", "--model", str(toy_file), "--steps", "2", "--random-disc", "--random-flow",
            "--flow-backend", "lk_pyramid", "--flow-size", "16", "--flow-iters", "1", "--inner-iters", "1",
            "--window", "0.0", "0.5", "--compare"]
    assert main([*base, "--frames-out", "npy", "--out", str(tmp_path / "n")]) == 0
    for name in ("plain", "guided"):
        arr = np.load(tmp_path / "n" / f"{name}.npy", allow_pickle=False)
        assert arr.dtype == np.uint8 and arr.shape == (ARCH.frames, ARCH.size, ARCH.size, 3)
        gif = load_gif(tmp_path / "n" / f"{name}.gif")
        assert gif.shape == arr.shape and np.abs(gif.astype(int) - arr).max() <= 64  # the same clip, quantised
    out = tmp_path / "p"
    for _ in range(2):  # the second run replaces the folders whole
        assert main([*base, "--frames-out", "png", "--out", str(out)]) == 0
    for name in ("plain", "guided"):
        files = sorted((out / name).iterdir())
        assert [f.name for f in files] == [f"{i:04d}.png" for i in range(ARCH.frames)]
        frames = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
        np.testing.assert_array_equal(frames, np.load(tmp_path / "n" / f"{name}.npy"))  # lossless, and seeded
    assert sorted(p.name for p in out.iterdir()) == ["guided", "guided.gif", "plain", "plain.gif", "record.json"]
    assert main(["generate", "--model", "tiny", "--no-guidance", "--steps", "1", "--frames", "2",
                 "--out", str(tmp_path / "t")]) == 0
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["plain.gif", "record.json"]  # none unless asked


def test_a_frame_folder_is_replaced_whole_or_not_at_all(tmp_path):
    from motionprompt.files.atomic import atomic_write_dir

    target = tmp_path / "clip"

    def fill(n):
        def write(folder):
            for i in range(n):
                (folder / f"{i}.txt").write_text(str(n))
        return write

    atomic_write_dir(target, fill(3))
    atomic_write_dir(target, fill(2))
    assert sorted(p.name for p in target.iterdir()) == ["0.txt", "1.txt"]

    def broken(folder):
        (folder / "0.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_dir(target, broken)
    assert sorted(p.name for p in target.iterdir()) == ["0.txt", "1.txt"] and (target / "0.txt").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]  # no temporary folder left


SAMPLING = ("generate", "demo", "evaluate", "toy-check", "toy-disc", "toy-results", "token-train")


def test_every_sampling_command_takes_threads_and_refuses_zero():
    """Issue 26 item 11: one toy clip took 77 s with torch's default threads on a shared 2-core machine, 5.7 s
    with one, and only bench and toy-train had the flag."""
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for name in SAMPLING:
        assert "--threads" in sub[name]._option_string_actions, name
        helps = sub[name]._option_string_actions["--threads"].help
        assert "1 for the toy" in helps and "min(4, cores - 1)" in helps
    extra = {"evaluate": ["--disc", "d.safetensors"], "token-train": ["--disc", "d.safetensors"]}
    for name in SAMPLING:
        assert build_parser().parse_args([name, *extra.get(name, []), "--threads", "3"]).threads == 3
        with pytest.raises(SystemExit):
            build_parser().parse_args([name, *extra.get(name, []), "--threads", "0"])


def test_the_default_is_one_thread_for_toy_sized_models_and_a_few_for_real_ones(monkeypatch, keep_threads):
    from motionprompt.cli import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 64)
    assert [threads.default_threads(m) for m in ("toy", "tiny", "runs/my_toy.safetensors", None)] == [1, 1, 1, 1]
    assert threads.default_threads("models/animatediff") == 4
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    assert threads.default_threads("models/animatediff") == 3
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)  # measured: 1 thread beat 2 even for an SD1.5 UNet
    assert threads.default_threads("models/animatediff") == 1
    monkeypatch.setattr(threads, "usable_cores", lambda: 1)
    assert threads.default_threads("models/animatediff") == 1
    torch.set_num_threads(2)
    assert threads.apply_threads(None, "toy") == 1 and torch.get_num_threads() == 1
    assert threads.apply_threads(2, "toy") == 2  # the flag wins
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the environment replaces the default, not the flag
    torch.set_num_threads(2)
    assert threads.default_threads("toy") is None and threads.apply_threads(None, "toy") == 2
    assert threads.apply_threads(1, "toy") == 1
    args = build_parser().parse_args(["demo", "--random-model"])
    assert threads.model_of(args) == "tiny" and threads.model_of(build_parser().parse_args(["toy-check"])) == "toy"


@pytest.mark.diffusers
def test_generate_samples_with_the_default_threads_and_records_them(tmp_path, toy_file, monkeypatch, keep_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    assert main(["generate", "--model", str(toy_file), "--no-guidance", "--steps", "1", "--out", str(tmp_path)]) == 0
    assert _record(tmp_path)["torch_threads"] == 1 == torch.get_num_threads()
    assert main(["generate", "--model", str(toy_file), "--no-guidance", "--steps", "1", "--threads", "2",
                 "--out", str(tmp_path)]) == 0
    assert _record(tmp_path)["torch_threads"] == 2
    assert os.environ.get("OMP_NUM_THREADS") is None
