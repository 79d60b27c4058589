"""The evaluation protocol's splits, the discriminator data it writes, and the quality gate."""

import itertools
from collections import Counter

import numpy as np
import pytest
import torch

from motionprompt.toy import disc as toy_disc
from motionprompt.toy import gate
from motionprompt.toy.model import save_model
from motionprompt.toy.protocol import SEEDS, all_captions, caption_split, eval_pairs
from motionprompt.toy.sample import real_clip
from motionprompt.toy.truth import clip_truth
from tests.test_toy_model import tiny_parts


def test_caption_splits_are_disjoint_complete_and_balanced():
    split = caption_split()
    sets = {k: set(v) for k, v in split.items()}
    assert sum(len(v) for v in sets.values()) == 96 and set.union(*sets.values()) == set(all_captions())
    assert not (sets["eval"] & sets["guide"]) and not (sets["eval"] & sets["independent"])
    assert not (sets["guide"] & sets["independent"])
    words = [c.split() for c in split["eval"]]
    assert set(Counter(w[1] for w in words).values()) == {6}  # colours
    assert set(Counter(w[2] for w in words).values()) == {8}  # shapes
    assert set(Counter(w[4] for w in words).values()) == {6}  # directions
    assert set(Counter(w[5] for w in words).values()) == {12}  # speeds


def test_seed_ranges_never_overlap_for_realistic_counts():
    starts = sorted(SEEDS.values())
    assert all(b - a >= 1 << 30 for a, b in itertools.pairwise(starts))
    pairs = eval_pairs(24, 3)
    assert len(pairs) == 72 and len(set(pairs)) == 72 and {s for _, s in pairs} == {SEEDS["eval"] + i for i in range(3)}


def test_real_clip_shows_its_caption_and_refuses_foreign_ones():
    cap = "a yellow triangle moving up quickly"
    truth = clip_truth(real_clip(cap, 5), cap)
    assert truth.direction_ok and truth.visible_frac == 1.0
    with pytest.raises(ValueError, match="not one the world writes"):
        real_clip("a yellow triangle moving up", 5)


@pytest.mark.diffusers
def test_role_data_is_written_once_per_clip_at_the_model_size(tmp_path, monkeypatch, one_torch_thread):
    model = save_model(tiny_parts(), tmp_path / "toy.safetensors", dtype=torch.float32)
    real, fake = toy_disc.write_role_data(str(model), "guide", tmp_path / "data", per_prompt=1, steps=2, cfg_scale=3.0,
                                          log=lambda m: None)
    clips = sorted(p for p in real.iterdir())
    assert len(clips) == 36 and len(list(fake.iterdir())) == 36
    from PIL import Image

    first = np.asarray(Image.open(clips[0] / "00.png"))
    assert first.shape == (16, 16, 3) and len(list(clips[0].glob("*.png"))) == 16

    def must_not_sample(*a, **k):
        raise AssertionError("complete clips are not sampled again")

    monkeypatch.setattr("motionprompt.toy.sample.sample_many", must_not_sample)
    toy_disc.write_role_data(str(model), "guide", tmp_path / "data", per_prompt=1, steps=2, cfg_scale=3.0,
                             log=lambda m: None)
    (fake / clips[3].name / "15.png").unlink()  # a clip cut short by a kill is sampled again
    monkeypatch.undo()
    toy_disc.write_role_data(str(model), "guide", tmp_path / "data", per_prompt=1, steps=2, cfg_scale=3.0,
                             log=lambda m: None)
    assert (fake / clips[3].name / "15.png").is_file()


@pytest.mark.diffusers
def test_gate_passes_real_clips_and_fails_a_random_model(one_torch_thread):
    result, clips, caps = gate.check(tiny_parts(), per_caption=1, steps=2, cfg_scale=3.0)
    assert len(clips) == len(caps) == 96 and clips[0].shape == (16, 16, 16, 3)
    assert result["real"]["visible_frames"] >= 0.99 and result["real"]["direction_ok"] >= 0.95
    assert result["model"]["visible_frames"] < 0.5 and not result["passed"]


def test_demo_side_by_side_shows_frames_on_top_and_flow_colours_of_the_motion_below():
    from motionprompt.toy.demo import side_by_side

    right = real_clip("a blue square moving right quickly", 1)
    left = real_clip("a blue square moving left quickly", 2)
    out = side_by_side(right, left, zoom=4)
    three = side_by_side(right, left, right, zoom=4)  # any number of columns, one flow scale
    assert three.shape == (16, 2 * 128 + 8, 3 * 128 + 2 * 8, 3)
    np.testing.assert_array_equal(three[:, :, 272:], out[:, :, :128])
    assert out.shape == (16, 2 * 128 + 8, 2 * 128 + 8, 3)
    np.testing.assert_array_equal(out[3, :128, :128], np.kron(right[3], np.ones((4, 4, 1), np.uint8)))
    flow_r, flow_l = out[5, 136:, :128].astype(int), out[5, 136:, 136:].astype(int)
    moving_r = np.abs(flow_r - 255).sum(-1) > 60  # not white = moving
    moving_l = np.abs(flow_l - 255).sum(-1) > 60
    assert moving_r.sum() > 100 and moving_l.sum() > 100
    # Middlebury wheel: rightward motion is red, leftward cyan
    assert flow_r[moving_r][:, 0].mean() > flow_r[moving_r][:, 2].mean() + 60
    assert flow_l[moving_l][:, 2].mean() > flow_l[moving_l][:, 0].mean() + 60


def test_seed_lists_and_prompt_files_of_ones_own_cases(tmp_path):
    from motionprompt.evaluation.cases import parse_seed_list, read_prompt_file

    assert parse_seed_list("7, 8,100-103") == [7, 8, 100, 101, 102, 103] and parse_seed_list("5") == [5]
    for bad in ("", "x", "5-3", "1,1", "1-2,2"):
        with pytest.raises(ValueError):
            parse_seed_list(bad)
    path = tmp_path / "p.txt"
    path.write_text("# mine\na red circle moving up slowly\n\n  a blue square moving left quickly  \n", encoding="utf-8")
    assert read_prompt_file(path) == ["a red circle moving up slowly", "a blue square moving left quickly"]
    path.write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no prompt"):
        read_prompt_file(path)


@pytest.mark.diffusers
def test_toy_disc_takes_ones_own_captions_seeds_architecture_and_training_seed(tmp_path, monkeypatch, capsys,
                                                                               one_torch_thread):
    """Issue 26 item 12: toy-disc fixed captions, seeds, width and training seed by role."""
    from motionprompt.cli.main import main
    from motionprompt.training import trainer

    model = save_model(tiny_parts(), tmp_path / "toy.safetensors", dtype=torch.float32)
    mine = ["a red circle moving up slowly", "a blue square moving left quickly"]  # evaluation captions, even
    real, fake = toy_disc.write_role_data(str(model), "guide", tmp_path / "data", per_prompt=1, steps=2, cfg_scale=3.0,
                                          log=lambda m: None, prompts=mine, real_seeds=[5, 6], fake_seeds=[7, 8, 9])
    assert sorted(p.name for p in real.iterdir()) == sorted(p.name for p in fake.iterdir()) == ["00_0", "01_0"]
    from PIL import Image

    first = np.stack([np.asarray(Image.open(f)) for f in sorted((real / "01_0").iterdir())])
    np.testing.assert_array_equal(first, real_clip(mine[1], 6, size=16))
    with pytest.raises(ValueError, match="other prompts, seeds"):  # the folder holds these cases' clips
        toy_disc.write_role_data(str(model), "guide", tmp_path / "data", 1, 2, 3.0, log=lambda m: None, prompts=mine)
    with pytest.raises(ValueError, match="need one each"):
        toy_disc.write_role_data(str(model), "guide", tmp_path / "x", 2, 2, 3.0, prompts=mine, real_seeds=[1, 2, 3])
    with pytest.raises(ValueError, match="not one the world writes"):
        toy_disc.write_role_data(str(model), "guide", tmp_path / "x", 1, 2, 3.0, prompts=["a fox moving up"])

    seen = {}

    def fake_data(model_path, role, out, per_prompt, steps, cfg_scale, log=print, **own):
        seen["own"] = own
        return out / "r", out / "f"

    def fake_train(cfg, progress=None, log=print):
        seen["cfg"] = cfg
        raise trainer.TrainError("stop here")

    monkeypatch.setattr(toy_disc, "write_role_data", fake_data)
    monkeypatch.setattr(trainer, "train_discriminator", fake_train)
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(mine) + "\n", encoding="utf-8")
    assert main(["toy-disc", "--model", str(model), "--role", "independent", "--data", str(tmp_path / "d")]) == 2
    assert seen["own"] == {"prompts": None, "real_seeds": None, "fake_seeds": None}  # the role's own, as shipped
    cfg = seen["cfg"]
    assert (cfg.seed, cfg.data_seed, cfg.arch, cfg.arch_config, cfg.steps) == (1, 1, "cnn", {}, 1500)
    assert main(["toy-disc", "--model", str(model), "--data", str(tmp_path / "d"), "--prompt-file", str(prompts),
                 "--real-seeds", "100-101", "--fake-seeds", "200,300", "--train-seed", "9", "--width", "8",
                 "--arch-config", '{"depth": 2}']) == 2
    assert seen["own"] == {"prompts": mine, "real_seeds": [100, 101], "fake_seeds": [200, 300]}
    cfg = seen["cfg"]
    assert (cfg.seed, cfg.data_seed, cfg.arch, cfg.arch_config) == (9, 9, "cnn", {"depth": 2, "width": 8})
    assert "--seed 9 --data-seed 9 --arch-config" in capsys.readouterr().err
