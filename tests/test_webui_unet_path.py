"""The inner loop's UNet rows in the WebUI double: cond rows only through AnimateDiff's own windows, the full
batch only where it is required, and nothing (uncond, host work) computed twice per step."""

import sys
from types import SimpleNamespace

import pytest
import torch

from .webui_host import WebUI, save_disc

TRAVEL = "a fox\n0: running\n6: jumping\nsnow"  # prompt travel: every frame has its own cond row
LONG = {"enable": True, "video_length": 12, "batch_size": 8}  # two overlapping context windows per step
MP = {"enabled": True, "discriminator": "disc.safetensors", "inner_iters": 2, "window_start": 0.25,
      "window_end": 0.75}


@pytest.fixture
def webui(tmp_path):
    ui = WebUI(tmp_path)
    save_disc(tmp_path / "models")
    return ui


def _windows(ad_params, step):
    from .webui_double.animatediff import AnimateDiffInfV2V

    return list(AnimateDiffInfV2V.uniform(step, ad_params.video_length, ad_params.batch_size, ad_params.stride,
                                          ad_params.overlap, ad_params.closed_loop))


@pytest.mark.parametrize("closed_loop", ["N", "R-P", "A"])
def test_cond_only_rows_give_the_full_batch_x0_and_gradient_in_float64(webui, closed_loop):
    """At a step with two overlapping windows and per-frame prompt-travel rows: the cond-only predictor's
    x0 and its gradient w.r.t. the cond rows equal the full [cond; uncond] batch through AnimateDiff's
    hooked forward, for x0_mode cond and cfg (float64, so any difference is a real one)."""
    from modules import script_callbacks

    from motionprompt.hosts.webui.host import predictor
    from motionprompt.hosts.webui.unet_path import UNetPath

    seen = {}

    def ours(params):  # registered after AnimateDiff: its hooked forward, windows and travel rows are in place
        den = params.denoiser
        if den.step != 3 or seen:
            return
        ad_params = webui.ad.mm_animatediff.ad_params
        seen["windows"] = _windows(ad_params, den.step)
        inner = den.inner_model
        inner.double()  # the k-diffusion wrapper holds the whole sd_model: float32 -> float64 -> float32 is exact
        try:
            p64 = SimpleNamespace(denoiser=den, x=params.x.double(), sigma=params.sigma.double(),
                                  image_cond=params.image_cond.double(), text_uncond=params.text_uncond.double())
            torch.manual_seed(0)
            probe = torch.randn(12, 4, 8, 8, dtype=torch.float64)
            for mode in ("cond", "cfg"):
                for path in (UNetPath(True), UNetPath(False, "reference")):
                    cond = params.text_cond.double().clone().requires_grad_(True)
                    with torch.enable_grad():
                        x0 = predictor(p64, 7.0, mode, 12, True, path)(cond)
                        (grad,) = torch.autograd.grad((x0 * probe).sum(), [cond])
                    seen[(mode, path.cond_only)] = (x0.detach(), grad)
            seen["rows_differ"] = not torch.equal(params.text_cond[0], params.text_cond[11])
        finally:
            inner.float()

    script_callbacks.on_cfg_denoiser(ours)
    webui.generate({"enabled": False}, {**LONG, "closed_loop": closed_loop}, prompt=TRAVEL)
    assert not webui.errors, webui.errors
    windows = seen["windows"]
    assert len(windows) >= 2 and len({f for w in windows for f in w}) < sum(map(len, windows))  # overlapping
    assert seen["rows_differ"]
    for mode in ("cond", "cfg"):
        (x0_c, g_c), (x0_f, g_f) = seen[(mode, True)], seen[(mode, False)]
        assert x0_c.shape == (12, 4, 8, 8)
        torch.testing.assert_close(x0_c, x0_f, rtol=0, atol=1e-12)
        torch.testing.assert_close(g_c, g_f, rtol=0, atol=1e-12)
        assert g_c.abs().sum() > 1e-6 * g_c.numel()  # a gradient to compare, not two zeros


def _token_trail(webui, monkeypatch, prompt):
    from motionprompt.engine.guidance import MotionGuide

    trail = []
    original = MotionGuide._optimize

    def spy(self, step, total, predict):
        original(self, step, total, predict)
        trail.append(self.tokens.detach().clone())

    with monkeypatch.context() as m:
        m.setattr(MotionGuide, "_optimize", spy)
        p, res = webui.generate({**MP, "x0_mode": "cfg"}, LONG, prompt=prompt)
    assert not webui.errors, webui.errors
    return p.extra_generation_params["MotionPrompt result"], trail, res.samples


def test_cond_only_and_full_batch_give_the_same_token_updates_and_say_which_ran(webui, monkeypatch):
    """End to end (12 frames, 2 windows, prompt travel, x0_mode=cfg): with a V1/HotShot-style motion module the
    full batch is required and runs; otherwise the cond rows only. The tokens after every guided step and the
    video agree, and the infotext says which path ran."""
    text_c, trail_c, samples_c = _token_trail(webui, monkeypatch, TRAVEL)
    monkeypatch.setattr(webui.ad.mm_animatediff.mm, "enable_gn_hack", lambda: True)
    text_f, trail_f, samples_f = _token_trail(webui, monkeypatch, TRAVEL)
    assert "cond-only UNet" in text_c and "full-batch" not in text_c, text_c
    assert "full-batch UNet (V1/HotShot GroupNorm hack)" in text_f, text_f
    assert len(trail_c) == len(trail_f) == 4
    for a, b in zip(trail_c, trail_f, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert not torch.equal(trail_c[0], trail_c[-1])  # the tokens did move
    torch.testing.assert_close(samples_c, samples_f, rtol=0, atol=1e-5)


def test_inner_loop_never_runs_uncond_rows_with_gradients_and_uncond_once_per_step(webui, monkeypatch):
    """Counts every UNet call (rows, grad mode, whether its text is the uncond row) per denoiser step. Per guided
    step: one grad call per inner iteration and window that a scored frame's output comes from (the others do
    not run), on the context's cond rows only, and the uncond prediction for x0_mode=cfg exactly once per
    window, without gradients; the host's own calls keep their 2x8 rows."""
    from modules import script_callbacks

    from motionprompt.engine import schedule
    from motionprompt.engine.config import preset
    from motionprompt.hosts.webui.animatediff import scoring_windows

    from .webui_double.model import ToyUNet

    current, uncond, calls = [], [], []
    forward = ToyUNet.forward

    def spy(self, x, timesteps, context):
        is_uncond = bool(uncond) and all(torch.equal(row, uncond[0]) for row in context)
        calls.append((current[-1], torch.is_grad_enabled(), x.shape[0], is_uncond))
        return forward(self, x, timesteps, context)

    def first(params):
        current.append(params.denoiser.step)
        if not uncond:
            uncond.append(params.text_uncond[0].clone())

    script_callbacks.callback_map["callbacks_cfg_denoiser"].insert(
        0, script_callbacks.ScriptCallback("spy", first, "spy"))
    monkeypatch.setattr(ToyUNet, "forward", spy)
    p, _ = webui.generate({**MP, "x0_mode": "cfg", "seed": 5}, LONG)
    assert not webui.errors, webui.errors
    assert "cond-only UNet" in p.extra_generation_params["MotionPrompt result"]
    ad_params = webui.ad.mm_animatediff.ad_params
    pairs = preset("paper", seed=5)
    skipped = 0
    for step in range(8):
        mine = [c for c in calls if c[0] == step]
        windows = len(_windows(ad_params, step))
        host = [c for c in mine if c[2] == 16]
        assert len(host) == windows and not any(c[1] for c in host)  # the sampler's own [cond; uncond] calls
        grad = [c for c in mine if c[1]]
        guided = 2 <= step <= 5
        scored = [{f for pair in schedule.sample_pairs(pairs, 12, step, it) for f in pair} for it in range(2)]
        needed = sum(len(scoring_windows(_windows(ad_params, step), frames)) for frames in scored)
        assert len(grad) == (needed if guided else 0), (step, mine)
        skipped += 2 * windows - needed if guided else 0
        assert all(c[2] == 8 and not c[3] for c in grad)  # cond rows of one context window, never uncond
        uncond_calls = [c for c in mine if c[3] and not c[1]]
        assert len(uncond_calls) == (windows if guided else 0), (step, mine)
    assert skipped > 0  # some iterations' pairs come from one window only: the other one did not run


def test_full_batch_only_where_required():
    from motionprompt.hosts.webui import unet_path

    class ControlNet:
        latest_network = object()

        def title(self):
            return "ControlNet"

    ad = SimpleNamespace()
    p = SimpleNamespace(scripts=SimpleNamespace(alwayson_scripts=[ControlNet()]))
    sys.modules["scripts.animatediff_infv2v"] = SimpleNamespace(AnimateDiffInfV2V=SimpleNamespace(uniform=len))
    try:
        assert unet_path.choose(p, True, ad) == unet_path.UNetPath(False, "ControlNet hint slicing")
        assert unet_path.choose(p, False, ad).cond_only  # the host's own split calls: cond rows are its layout
        ControlNet.latest_network = None  # ControlNet installed, no unit in use
        assert unet_path.choose(p, True, ad).cond_only
        del sys.modules["scripts.animatediff_infv2v"]
        assert unet_path.choose(p, True, ad).text() == "full-batch UNet (AnimateDiff's context scheduler not found)"
    finally:
        sys.modules.pop("scripts.animatediff_infv2v", None)


def test_text_encoder_runs_once_per_iteration_on_the_distinct_prompts_only(webui, monkeypatch):
    """Prompt travel gives 12 frame rows from 2 key-frame prompts: each inner iteration encodes the 2 distinct
    prompts once (AnimateDiff's interpolation makes the 12 rows), plus one final encode per guided step; each
    prompt in a call of its own, as A1111's get_learned_conditioning encodes it (same rows as the host's)."""
    from modules import script_callbacks, sd_hijack_clip

    current, calls = [], []
    process = sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords.process_tokens

    def spy(self, remade_batch_tokens, batch_multipliers):
        calls.append((current[-1] if current else None, len(remade_batch_tokens), torch.is_grad_enabled()))
        return process(self, remade_batch_tokens, batch_multipliers)

    script_callbacks.callback_map["callbacks_cfg_denoiser"].insert(
        0, script_callbacks.ScriptCallback("spy", lambda params: current.append(params.denoiser.step), "spy"))
    monkeypatch.setattr(sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords, "process_tokens", spy)
    webui.generate(MP, LONG, prompt=TRAVEL)
    assert not webui.errors, webui.errors
    for step in range(2, 6):
        assert [c[1:] for c in calls if c[0] == step] == [(1, True)] * 4 + [(1, False)] * 2, (step, calls)
    assert not [c for c in calls if c[0] in (6, 7)]
