"""The shipped toy model and discriminators (``motionprompt/toy/weights``): they load through the production
loaders and reproduce what is documented beside them (MODEL_CARD.md, gate.json, reference_stats.json)."""

import hashlib
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
def test_the_demo_shows_plain_the_amortized_token_and_per_sample_guidance_of_the_shipped_model(tmp_path,
                                                                                               one_torch_thread):
    from motionprompt.files.video import load_gif
    from motionprompt.toy.demo import MOTION_TOKEN, run_toy_demo

    summary = run_toy_demo(tmp_path, prompts=1, steps=4, log=lambda m: None)
    assert summary["pairs"] == 1 and set(summary["arms"]) == {"amortized", "paper"}
    arms = summary["arms"]  # the shipped token as it is (no update, drift 0) vs the per-sample optimization
    assert arms["amortized"]["token_drift_mean"] == 0 and arms["paper"]["token_drift_mean"] > 0
    setup = json.loads((tmp_path / "samples.json").read_text())["setup"]
    assert setup["tokens"] == {"amortized": hashlib.sha256(MOTION_TOKEN.read_bytes()).hexdigest()}
    report = (tmp_path / "report.html").read_text()
    assert "side_by_side_00.gif" in report and "amortized" in report and "paper" in report
    clips = {k: load_gif(tmp_path / "clips" / f"00_{k}.gif") for k in ("plain", "amortized", "paper")}
    three = load_gif(tmp_path / "side_by_side_00.gif")
    h, w = clips["plain"].shape[1:3]
    assert three.shape[0] == 16 and three.shape[1] > 2 * 4 * h and three.shape[2] > 3 * 4 * w  # 3 columns, flow below
    names = ("plain", "amortized", "paper")
    for col, k in enumerate(names):  # each column is its arm's clip, in that order (up to the GIF palette)
        shown = three[:, : 4 * h, col * (4 * w + 8) :][:, :, : 4 * w].astype(float)
        off = {n: np.abs(shown - np.kron(clips[n], np.ones((1, 4, 4, 1)))).mean() for n in names}
        assert off[k] < 1.0 and off[k] == min(off.values()), (k, off)
    assert not np.array_equal(clips["plain"], clips["amortized"])  # the token changes the sample
    assert not np.array_equal(clips["plain"], clips["paper"])


def test_the_demo_refuses_a_flag_it_would_ignore():
    from motionprompt.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["demo", "--train-steps", "5"])
    assert exc.value.code == 2
