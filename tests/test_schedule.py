import pytest

from motionprompt.engine import schedule
from motionprompt.engine.config import GuidanceConfig, preset


def test_paper_window_is_steps_4_to_14_of_25():
    assert schedule.guided_steps(GuidanceConfig(), 25) == list(range(4, 15))


def test_window_scales_with_step_count_and_every_k():
    cfg = GuidanceConfig(every_k=2)
    assert schedule.guided_steps(cfg, 25) == [4, 6, 8, 10, 12, 14]
    assert schedule.guided_steps(GuidanceConfig(), 50) == list(range(8, 30))
    assert schedule.phase(cfg, 3, 25) == "before"
    assert schedule.phase(cfg, 5, 25) == "window"
    assert schedule.phase(cfg, 15, 25) == "after"


def test_pairs_are_reproducible_bounded_and_vary():
    cfg = GuidanceConfig(pairs=3, gap_min=2, gap_max=5, seed=7)
    seen = set()
    for step in range(20):
        for it in range(3):
            pairs = schedule.sample_pairs(cfg, 16, step, it)
            assert pairs == schedule.sample_pairs(cfg, 16, step, it)
            for a, b in pairs:
                assert 0 <= a < b < 16 and 2 <= b - a <= 5
            seen.update(pairs)
    assert len(seen) > 10
    other = GuidanceConfig(pairs=3, gap_min=2, gap_max=5, seed=8)
    assert schedule.sample_pairs(other, 16, 0, 0) != schedule.sample_pairs(cfg, 16, 0, 0)


def test_short_clips_clip_the_gap_and_single_frames_fail():
    cfg = GuidanceConfig(gap_min=3, gap_max=6)
    assert schedule.sample_pairs(cfg, 2, 0, 0) == [(0, 1)]
    with pytest.raises(ValueError, match="at least 2 frames"):
        schedule.sample_pairs(cfg, 1, 0, 0)


def test_presets_and_validation():
    fast = preset("fast")
    assert fast.inner_iters == 1 and fast.flow.size == 128
    assert preset("paper", inner_iters=5).inner_iters == 5
    with pytest.raises(ValueError, match="unknown preset"):
        preset("turbo")
    with pytest.raises(ValueError, match="window"):
        GuidanceConfig(window_start=0.7, window_end=0.2).validate()
    with pytest.raises(ValueError, match="multiple of 8"):
        GuidanceConfig.from_dict({"flow": {"backend": "raft_small", "size": 100, "iters": 3}})
    with pytest.raises(ValueError, match="unknown guidance settings"):
        GuidanceConfig.from_dict({"learning_rate": 1})
    assert GuidanceConfig.from_dict(GuidanceConfig().to_dict()) == GuidanceConfig()
