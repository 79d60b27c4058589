"""The shipped toy model and discriminators (``motionprompt/toy/weights``): they load through the production
loaders and reproduce what is documented beside them (MODEL_CARD.md, gate.json, reference_stats.json)."""

import json

import numpy as np
import pytest
import torch

from motionprompt.toy.demo import GUIDE_D, INDEPENDENT_D
from motionprompt.toy.model import SHIPPED

pytestmark = pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped toy model in this checkout")


@pytest.mark.diffusers
def test_the_shipped_model_reproduces_its_reference_samples_and_keeps_the_frozen_text_encoder(one_torch_thread):
    from motionprompt.toy.card import reference_stats
    from motionprompt.toy.model import build, load_model

    parts = load_model()
    doc = json.loads((SHIPPED.parent / "reference_stats.json").read_text())
    now = reference_stats(parts, steps=doc["steps"])
    assert [c["prompt"] for c in now["clips"]] == [c["prompt"] for c in doc["clips"]]
    for was, got in zip(doc["clips"], now["clips"], strict=True):
        assert got["direction_ok"] and was["direction_ok"]  # each reference clip moves the prompted way
        assert got["visible_frac"] == pytest.approx(was["visible_frac"], abs=1 / 16)
        assert got["displacement"] == pytest.approx(was["displacement"], abs=1.0)  # pixels at 32 px
        assert np.allclose(got["mean_rgb"], was["mean_rgb"], atol=1.0)
    # the card's claim: the text encoder is the seed's random initialisation, never trained
    assert parts.meta["learning"]["text_encoder"] == "frozen"
    fresh = build(parts.arch, seed=parts.meta["seed"]).text.state_dict()
    assert all(torch.allclose(v, fresh[k], atol=2e-3) for k, v in parts.text.state_dict().items())
    gate = json.loads((SHIPPED.parent / "gate.json").read_text())
    card = (SHIPPED.parent / "MODEL_CARD.md").read_text()
    assert gate["passed"] and f"| direction_ok | {gate['model']['direction_ok']:.1%} |" in card
    assert gate["model_meta"]["unet_steps"] == parts.meta["unet_steps"]  # the card describes these weights


def test_the_shipped_discriminators_prefer_each_real_world_clip_to_its_frames_shuffled():
    from motionprompt.disc.checkpoint import load_discriminator
    from motionprompt.engine.judge import d_score
    from motionprompt.toy.disc import TOY_FLOW
    from motionprompt.toy.protocol import seeds
    from motionprompt.toy.sample import real_clip

    clips = [real_clip(p, s, size=32) for p, s in zip(("a red circle moving left slowly", "a blue square moving up quickly",
                                                     "a green triangle moving right quickly"), seeds("gate", 3), strict=True)]
    order = np.random.default_rng(0).permutation(16)
    for path in (GUIDE_D, INDEPENDENT_D):
        disc = load_discriminator(path)
        assert disc.flow == TOY_FLOW  # the toy protocol's flow, which guidance then uses
        real = [d_score(c, disc) for c in clips]
        shuffled = [d_score(c[order], disc) for c in clips]
        assert all(r > s for r, s in zip(real, shuffled, strict=True)), (path.name, real, shuffled)


@pytest.mark.diffusers
def test_the_demo_pairs_plain_and_guided_clips_of_the_shipped_model_side_by_side(tmp_path, one_torch_thread):
    from motionprompt.files.video import load_gif
    from motionprompt.toy.demo import run_toy_demo

    summary = run_toy_demo(tmp_path, prompts=1, steps=4, log=lambda m: None)
    assert summary["pairs"] == 1 and set(summary["arms"]) == {"paper"}
    report = (tmp_path / "report.html").read_text()
    assert "side_by_side_00.gif" in report and "paper" in report
    plain, guided = load_gif(tmp_path / "clips" / "00_plain.gif"), load_gif(tmp_path / "clips" / "00_paper.gif")
    pair = load_gif(tmp_path / "side_by_side_00.gif")
    assert pair.shape[0] == plain.shape[0] == 16 and pair.shape[1] > 2 * plain.shape[1]  # frames over flow maps
    assert not np.array_equal(plain, guided)  # the guided clip is its own sample, not a copy


def test_the_demo_refuses_a_flag_it_would_ignore():
    from motionprompt.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["demo", "--train-steps", "5"])
    assert exc.value.code == 2
