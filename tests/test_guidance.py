"""The engine end to end on the diffusers reference host (tiny random AnimateDiff-shaped model)."""

import itertools

import pytest
import torch
from torch import nn

from motionprompt.disc.checkpoint import load_discriminator, save_discriminator
from motionprompt.engine import schedule
from motionprompt.engine.guidance import MotionGuide
from motionprompt.flow.registry import build_flow
from motionprompt.flow.settings import FlowSettings
from motionprompt.hosts.diffusers.host import DiffusersVideoHost
from motionprompt.hosts.diffusers.sampler import sample

from .conftest import small_cfg

pytestmark = pytest.mark.diffusers  # every test samples the diffusers reference host

RUN = {"steps": 8, "num_frames": 4, "height": 64, "width": 64, "cfg_scale": 7.5, "seed": 3}


def _weights(model):
    return [p for m in (model.unet, model.vae, model.text_encoder) for p in m.parameters()]


def test_gradients_reach_the_tokens_and_only_the_tokens(model, host, flow, disc):
    cfg = small_cfg(inner_iters=2)
    guide = MotionGuide(cfg, host, flow, disc)
    t0 = guide.tokens0.clone()
    sample(host, guide, **RUN)
    assert all(p.requires_grad for p in _weights(model))  # host weights untouched ...
    assert all(p.grad is None for p in _weights(model))  # ... and never given a gradient
    assert all(p.grad is None for p in disc.parameters())
    assert all(r.iterations and r.iterations[0].grad_norm > 0 for r in guide.records)
    assert not torch.equal(guide.tokens.detach(), t0)
    assert guide.tokens.dtype == torch.float32 and guide.tokens.is_leaf


def test_token_gradient_matches_finite_differences(model):
    """tokens -> CLIP -> UNet + motion module -> x0 -> VAE decode carries the true derivative (float64)."""
    for m in (model.unet, model.vae, model.text_encoder):
        m.double()
    host = DiffusersVideoHost(model, "a fox", freeze_weights=True)
    sched = model.scheduler
    sched.set_timesteps(10)
    t = sched.timesteps[4]
    latents = torch.randn(1, 4, 3, 8, 8, dtype=torch.float64)
    predict = host.predictor(latents, t, 7.5, "cond")
    probe = torch.randn(2, 3, 64, 64, dtype=torch.float64)

    def f(tokens):
        x0 = predict(host.encode(tokens))
        return (host.decode(x0[[0, 2]]) * probe).sum()

    tokens = host.embed_init("authentic", 1).double().requires_grad_(True)
    (g,) = torch.autograd.grad(f(tokens), [tokens])
    direction = g / g.norm()
    eps = 1e-4
    with torch.no_grad():
        fd = (f(tokens + eps * direction) - f(tokens - eps * direction)) / (2 * eps)
    assert g.norm() > 0
    assert fd.item() == pytest.approx(g.norm().item(), rel=1e-4)


class MeanFlowD(nn.Module):
    """Hand-made discriminator: 'real' means little motion. Fixed, smooth, no training needed."""

    def forward(self, flow):
        return -50.0 * flow.abs().mean(dim=(1, 2, 3))


@pytest.mark.parametrize(("make_disc", "backend"), [(MeanFlowD, "raft_small"), (None, "raft_small"),
                                                    (MeanFlowD, "lk_pyramid")])
def test_loss_goes_down_over_inner_iterations_on_a_fixed_discriminator(model, disc, make_disc, backend):
    host = DiffusersVideoHost(model, "a fox running", freeze_weights=True)
    # two frames -> the pair is the same in every iteration, so the losses are comparable
    settings = FlowSettings(backend, size=128 if backend.startswith("raft") else 64, iters=3)
    cfg = small_cfg(inner_iters=5, lambda_tv=0.0, lambda_drift=0.0, window_start=0.3, window_end=0.5, flow=settings)
    flow = build_flow(settings, allow_random=True)
    d = make_disc() if make_disc else disc
    guide = MotionGuide(cfg, host, flow, d)
    sample(host, guide, **{**RUN, "num_frames": 2, "steps": 10})
    assert len(guide.records) == 2
    for rec in guide.records:
        losses = [it.disc for it in rec.iterations]
        assert all(b < a for a, b in itertools.pairwise(losses)), losses


def test_same_seed_same_result_and_different_seed_differs(model, flow, disc):
    def run(seed):
        host = DiffusersVideoHost(model, "a fox", freeze_weights=True)
        guide = MotionGuide(small_cfg(seed=seed, pairs=2), host, flow, disc)
        out = sample(host, guide, **RUN)
        return out.frames, [[it.pairs for it in r.iterations] for r in guide.records], guide.tokens.detach()

    f1, p1, t1 = run(0)
    f2, p2, t2 = run(0)
    _f3, p3, t3 = run(5)
    assert torch.equal(f1, f2) and p1 == p2 and torch.equal(t1, t2)
    assert p1 != p3 and not torch.equal(t1, t3)


def test_schedule_and_conditioning_policy(model, flow, disc):
    host = DiffusersVideoHost(model, "a fox", freeze_weights=True)
    steps = 10
    calls = {}

    def run(**kw):
        guide = MotionGuide(small_cfg(inner_iters=1, **kw), host, flow, disc)
        latents = torch.randn(1, 4, 3, 8, 8)
        model.scheduler.set_timesteps(steps)
        out = []
        for i, t in enumerate(model.scheduler.timesteps):
            out.append(guide.conditioning(i, steps, host.predictor(latents, t, 7.5, guide.cfg.x0_mode)))
        calls[tuple(kw.items())] = guide
        return guide, out

    guide, conds = run()
    guided = schedule.guided_steps(guide.cfg, steps)
    assert [r.step for r in guide.records] == guided == [2, 3, 4, 5]
    assert all(c is None for i, c in enumerate(conds) if i not in guided)
    assert all(conds[i] is not None and conds[i].shape == host.cond_plain.shape for i in guided)

    guide, conds = run(cond_after="optimized", cond_before="init_tokens", every_k=2)
    assert [r.step for r in guide.records] == [2, 4]
    assert conds[0] is not None and not torch.equal(conds[0], host.cond_plain)
    assert torch.equal(conds[3], conds[2])  # window step without optimization reuses the last cond
    assert conds[9] is not None and torch.equal(conds[9], conds[5])


def test_tokens_splice_after_the_prompt_and_leave_the_prefix(model):
    host = DiffusersVideoHost(model, "a white fox", n_tokens=2, freeze_weights=True)
    with torch.no_grad():
        c = host.encode(torch.randn(2, 32))
    n_prompt = 1 + 3  # BOS + three words
    assert torch.allclose(c[:, :n_prompt], host.cond_plain[:, :n_prompt], atol=1e-6)  # CLIP is causal
    assert not torch.allclose(c[:, n_prompt : n_prompt + 2], host.cond_plain[:, n_prompt : n_prompt + 2])
    with pytest.raises(ValueError, match="75-token chunk"):
        DiffusersVideoHost(model, " ".join(["fox"] * 75), n_tokens=1)


class ExplodingD(nn.Module):
    def __init__(self, exc):
        super().__init__()
        self.exc = exc

    def forward(self, flow):
        raise self.exc


class NanD(nn.Module):
    def forward(self, flow):
        return flow.mean(dim=(1, 2, 3)) * float("nan")


def test_failure_inside_guidance_finishes_unguided_and_says_why(model, flow):
    host = DiffusersVideoHost(model, "a fox", freeze_weights=True)
    plain = sample(host, None, **RUN)
    # an out-of-memory on a path that was asked for (auto goes lower instead: test_memory)
    for exc, words, memory in [(RuntimeError("boom"), "RuntimeError at step 2: boom", "auto"),
                               (torch.cuda.OutOfMemoryError("CUDA out of memory"), "out of memory at step 2", "speed")]:
        guide = MotionGuide(small_cfg(memory=memory), host, flow, ExplodingD(exc))
        out = sample(host, guide, **RUN)
        assert words in guide.disabled
        assert guide.summary()["disabled"] == guide.disabled
        assert torch.equal(out.frames, plain.frames)  # failed before any injection: identical to plain


def test_non_finite_loss_skips_updates_and_keeps_tokens(model, flow):
    host = DiffusersVideoHost(model, "a fox", freeze_weights=True)
    guide = MotionGuide(small_cfg(inner_iters=2), host, flow, NanD())
    sample(host, guide, **RUN)
    assert guide.disabled is None
    assert all(it.skipped for r in guide.records for it in r.iterations)
    assert torch.equal(guide.tokens.detach(), guide.tokens0)


def test_interrupt_is_honoured_between_iterations(model, flow, disc):
    host = DiffusersVideoHost(model, "a fox", freeze_weights=True)
    guide = MotionGuide(small_cfg(inner_iters=3), host, flow, disc)
    done = []

    def predict_then_interrupt(cond):
        done.append(1)
        host.interrupt_flag = len(done) >= 2
        return predict(cond)

    latents = torch.randn(1, 4, 3, 8, 8)
    model.scheduler.set_timesteps(8)
    predict = host.predictor(latents, model.scheduler.timesteps[2], 7.5, "cond")
    guide.conditioning(2, 8, predict_then_interrupt)
    assert guide.records[0].status == "interrupted"
    assert len(guide.records[0].iterations) == 2


def test_discriminator_checkpoint_must_match_flow_backend(tmp_path, host, flow, disc):
    path = save_discriminator(tmp_path / "d.safetensors", disc, FlowSettings("raft_large", 128, 3))
    with pytest.raises(ValueError, match="trained on 'raft_large' flow"):
        MotionGuide(small_cfg(), host, flow, load_discriminator(path))


def test_cfg_x0_mode_uses_guided_prediction(model):
    host = DiffusersVideoHost(model, "a fox", freeze_weights=True)
    model.scheduler.set_timesteps(10)
    t = model.scheduler.timesteps[3]
    latents = torch.randn(1, 4, 3, 8, 8)
    with torch.no_grad():
        cond = host.cond_plain
        x0_cond = host.predictor(latents, t, 7.5, "cond")(cond)
        x0_cfg = host.predictor(latents, t, 7.5, "cfg")(cond)
        ref = model.scheduler.step(host.cfg_eps(latents, t, cond, 7.5), t, latents).pred_original_sample
    assert torch.allclose(x0_cfg, ref[0].permute(1, 0, 2, 3), atol=1e-4)
    assert not torch.allclose(x0_cond, x0_cfg)


def test_a_guided_step_computes_nothing_twice(model, host, flow, disc, monkeypatch):
    """Per guided step (x0_mode=cfg): one grad UNet call on the cond video per inner iteration, the uncond
    prediction once and without gradients, one text encode per iteration plus the final one, and one decode
    per iteration of exactly the distinct frames its pairs use."""
    cfg = small_cfg(inner_iters=3, x0_mode="cfg", pairs=2, window_start=0.25, window_end=0.75)
    guide = MotionGuide(cfg, host, flow, disc)
    log, step = [], [0]
    eps, encode, decode = DiffusersVideoHost.eps, DiffusersVideoHost.encode, DiffusersVideoHost.decode

    def spy_eps(self, latents, t, cond):
        kind = "uncond" if cond is self.uncond else "both" if latents.shape[0] == 2 else "cond"
        log.append((step[0], "unet", kind, torch.is_grad_enabled()))
        return eps(self, latents, t, cond)

    def spy_encode(self, tokens):
        log.append((step[0], "encode", None, torch.is_grad_enabled()))
        return encode(self, tokens)

    def spy_decode(self, latents):
        log.append((step[0], "decode", latents.shape[0], torch.is_grad_enabled()))
        return decode(self, latents)

    monkeypatch.setattr(DiffusersVideoHost, "eps", spy_eps)
    monkeypatch.setattr(DiffusersVideoHost, "encode", spy_encode)
    monkeypatch.setattr(DiffusersVideoHost, "decode", spy_decode)
    sample(host, guide, **RUN, on_step=lambda i, n: step.__setitem__(0, i + 1))
    assert [r.step for r in guide.records] == [2, 3, 4, 5]
    for rec in guide.records:
        mine = [e[1:] for e in log if e[0] == rec.step]
        unet = [e for e in mine if e[0] == "unet"]
        assert unet.count(("unet", "cond", True)) == 3
        assert unet.count(("unet", "uncond", False)) == 1  # once per step, no graph
        assert unet.count(("unet", "both", False)) == 1  # the sampler's own CFG step
        assert len(unet) == 5
        assert [e for e in mine if e[0] == "encode"] == [("encode", None, True)] * 3 + [("encode", None, False)]
        decoded = [e[1] for e in mine if e[0] == "decode"]
        assert decoded == [len({f for pair in it.pairs for f in pair}) for it in rec.iterations]


