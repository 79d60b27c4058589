"""MotionGuide started from a given token (an amortized one): where it is used, what the drift anchors to,
and the no-inner-loop mode."""

import pytest
import torch

from motionprompt.amortized.token_file import save_token, start_tokens
from motionprompt.engine.guidance import MotionGuide
from motionprompt.hosts.diffusers.host import DiffusersVideoHost

from .conftest import small_cfg


def _conds(guide, host, model, steps=8):
    model.scheduler.set_timesteps(steps)
    latents = torch.randn(1, 4, 3, 8, 8)
    return [guide.conditioning(i, steps, host.predictor(latents, t, 7.5, "cond"))
            for i, t in enumerate(model.scheduler.timesteps)]


def test_a_start_token_is_the_prompt_outside_the_window_and_the_drift_anchor(model, flow, disc, tmp_path):
    host = DiffusersVideoHost(model, "a fox", freeze_weights=True)
    start = host.embed_init("authentic", 1) + 0.5 * torch.randn(1, 32)
    path = save_token(tmp_path / "t.safetensors", start)
    cfg = small_cfg(inner_iters=2, start_token=str(path))
    guide = MotionGuide(cfg, host, flow, disc, start_tokens=start_tokens(cfg))
    assert torch.equal(guide.tokens0, start) and guide.started
    conds = _conds(guide, host, model)
    with torch.no_grad():
        with_start = host.encode(start)
    assert [r.step for r in guide.records] == [2, 3, 4]  # window 0.16-0.6 of 8 steps
    for i in (0, 1, 5, 6, 7):  # outside the window: the prompt with the start token, not the bare prompt
        assert torch.allclose(conds[i], with_start, atol=1e-6)
    assert not torch.allclose(conds[4], with_start, atol=1e-6)  # optimized inside
    drift = guide.records[-1].iterations[-1].drift
    far = float((start - host.embed_init("authentic", 1)).pow(2).sum())  # what it would be, anchored to the word
    assert 0 < drift < 0.1 * far


def test_no_inner_loop_uses_the_token_as_it_is_and_needs_one(model, tmp_path):
    host = DiffusersVideoHost(model, "a fox", freeze_weights=True)
    start = torch.randn(1, 32)
    calls = []
    guide = MotionGuide(small_cfg(inner_iters=0), host, None, None, start_tokens=start)
    conds = [guide.conditioning(i, 8, lambda cond: calls.append(1)) for i in range(8)]
    with torch.no_grad():
        expected = host.encode(start)
    assert not calls and all(torch.allclose(c, expected) for c in conds) and guide.summary()["iterations"] == 0
    with pytest.raises(ValueError, match="needs a start token"):
        MotionGuide(small_cfg(inner_iters=0), host, None, None)
    with pytest.raises(ValueError, match="pass its vectors as start_tokens"):  # the engine opens no token file
        MotionGuide(small_cfg(inner_iters=0, start_token="t.safetensors"), host, None, None)
    with pytest.raises(ValueError, match="needs a flow estimator"):
        MotionGuide(small_cfg(inner_iters=1), host, None, None, start_tokens=start)
    with pytest.raises(ValueError, match=r"start token is \(1, 16\)"):
        MotionGuide(small_cfg(inner_iters=0), host, None, None, start_tokens=torch.randn(1, 16))
