"""The procedural world: determinism, caption <-> content, and the ground-truth measures that read clips."""

import numpy as np
import pytest

from motionprompt.hosts.diffusers.tokenizer import WordTokenizer
from motionprompt.toy.model import ToyArch
from motionprompt.toy.truth import clip_truth, colour_masks, summarize, track
from motionprompt.toy.world import (
    COLOURS,
    DIRECTIONS,
    LEVELS,
    SPEEDS,
    WorldSpec,
    caption,
    clip,
    parse_caption,
    render,
    sample_scene,
    screen_paths,
    with_caption,
)


def test_same_seed_same_clip_other_seed_other_clip():
    a, cap_a, _ = clip(LEVELS["full"], 123)
    b, cap_b, _ = clip(LEVELS["full"], 123)
    c, _, _ = clip(LEVELS["full"], 124)
    assert a.dtype == np.uint8 and a.shape == (16, 32, 32, 3)
    assert np.array_equal(a, b) and cap_a == cap_b
    assert not np.array_equal(a, c)


def test_scene_renders_at_any_size_with_the_same_geometry():
    scene = sample_scene(LEVELS["toy"], 5)
    small, big = render(scene, 32), render(scene, 64)
    assert big.shape == (16, 64, 64, 3)
    t_small = track(small, scene.objects[0].colour)
    t_big = track(big, scene.objects[0].colour)
    np.testing.assert_allclose(t_big.centre / 64, t_small.centre / 32, atol=0.02)


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("speed", list(SPEEDS))
def test_caption_says_what_the_pixels_show(direction, speed):
    spec = LEVELS["toy"]
    scene = with_caption(spec, 11, colour="red", shape="square", direction=direction, speed=speed)
    frames = render(scene, 32)
    cap = caption(scene)
    assert cap == f"a red square moving {direction} {speed}"
    truth = clip_truth(frames, cap)
    expected = SPEEDS[speed] * 15 * 32
    assert truth.visible_frac == 1.0 and truth.direction_ok
    assert truth.displacement == pytest.approx(expected, rel=0.1)
    assert truth.off_axis < 1.0 and truth.area_cv < 0.1 and truth.jerk < 0.5
    # the same pixels read against the opposite direction fail
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}[direction]
    assert not clip_truth(frames, cap.replace(f" {direction} ", f" {opposite} ")).direction_ok


def test_ground_truth_path_matches_the_measured_centre():
    scene = sample_scene(LEVELS["toy"], 3)
    frames = render(scene, 32)
    path = screen_paths(scene, 32)[0]
    measured = track(frames, scene.objects[0].colour).centre
    assert np.abs(measured - path).max() < 1.5  # pixels; shapes are not symmetric about their centre


def test_every_toy_clip_keeps_its_object_in_view_and_moving_the_captioned_way():
    truths = [clip_truth(*clip(LEVELS["toy"], s)[:2]) for s in range(60)]
    s = summarize(truths)
    assert s["visible_frames"] == 1.0 and s["direction_ok"] == 1.0 and s["colour_purity"] > 0.99


def test_the_toy_level_centres_every_path_so_the_direction_decides_where_the_object_is_on_each_frame():
    from dataclasses import replace

    from motionprompt.toy.world import CENTRED_JITTER, object_path

    def placement(spec):
        on_line, starts_behind = [], []
        for seed in range(80):
            obj = sample_scene(spec, seed).objects[0]
            path, _ = object_path(obj, spec.frames)
            d = np.array(DIRECTIONS[obj.direction])
            mid = (path[0] + path[-1]) / 2
            on_line.append(np.abs(mid - 0.5).max() <= CENTRED_JITTER + 1e-9)  # midpoint and line near the centre
            # the object starts on the side it moves away from, by at least half its travel less the jitter
            starts_behind.append(float(((path[0] - 0.5) * d).sum()) < -(SPEEDS[obj.speed] * 15 / 2 - CENTRED_JITTER))
        return np.mean(on_line), np.mean(starts_behind)

    assert LEVELS["toy"].layout == "centred" and placement(LEVELS["toy"]) == (1.0, 1.0)
    assert placement(replace(LEVELS["toy"], layout="free"))[0] < 0.4  # the free layout starts anywhere that fits


def test_captions_parse_back_and_name_every_object_of_the_full_world():
    seen = set()
    for seed in range(80):
        scene = sample_scene(LEVELS["full"], seed)
        parsed = parse_caption(scene.caption)
        assert len(parsed) == len(scene.objects)
        for obj, got in zip(scene.objects, parsed, strict=True):
            assert got["colour"] == obj.colour and got["shape"] == obj.shape and got["motion"] == obj.motion
            assert got["texture"] == obj.texture and got["speed"] == obj.speed
            if obj.motion != "spinning":
                assert got["direction"] == obj.direction
        seen.update((scene.background, scene.camera))
        seen.update(o.motion for o in scene.objects)
    assert {"bouncing", "spinning", "accelerating", "panning left", "zooming in", "checkered"} <= seen


def test_camera_pan_moves_a_still_background_the_other_way():
    base = with_caption(WorldSpec(backgrounds=("checkered",), cameras=("panning left",), max_objects=1,
                                  motions=("spinning",)), 2)
    frames = render(base, 32).astype(float)
    # panning left: content drifts right; the best horizontal shift between frames 0 and 8 is positive
    errs = {s: np.abs(np.roll(frames[0], s, axis=1)[:, 4:-4] - frames[8][:, 4:-4]).mean() for s in range(-6, 7)}
    assert min(errs, key=errs.get) > 0


def test_hue_classifier_separates_every_palette_colour_from_grey():
    swatch = np.array([[list(rgb) for rgb in COLOURS.values()] + [[128, 128, 128], [90, 92, 88]]], dtype=np.uint8)
    masks = colour_masks(swatch[None])
    for i, name in enumerate(COLOURS):
        assert masks[name][0, 0, i] and sum(m[0, 0, i] for m in masks.values()) == 1
    assert not any(m[0, 0, -1] or m[0, 0, -2] for m in masks.values())


def test_world_words_do_not_collide_in_the_toy_tokenizer():
    tok = WordTokenizer(vocab_size=ToyArch().vocab_size, max_length=ToyArch().max_length)
    words = [*LEVELS["full"].vocabulary(), "authentic", "the"]
    ids = [tok.ids(w)[0] for w in words]
    assert len(set(ids)) == len(words)


def test_longest_full_world_caption_fits_the_toy_chunk_with_three_tokens():
    tok = WordTokenizer(vocab_size=ToyArch().vocab_size, max_length=ToyArch().max_length)
    longest = max((sample_scene(LEVELS["full"], s).caption for s in range(300)), key=lambda c: len(tok.ids(c)))
    assert len(tok.ids(longest)) + 3 <= tok.max_length - 2, longest
