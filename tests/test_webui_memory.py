"""The memory paths in the WebUI doubles (A1111's ldm UNet with AnimateDiff master's injected motion modules; early-
2024 Forge's ldm_patched UNet with forge/master's block-modifier motion modules): the same token updates and video
on every path, real recomputation of the host's own blocks, everything restored afterwards, what the result line
says, and a memory the plan says is too small."""

import pytest
import torch

from .webui_host import WebUI, install_double, save_disc

TRAVEL = "a fox\n0: running\n6: jumping\nsnow"
MP = {"enabled": True, "discriminator": "disc.safetensors", "inner_iters": 2, "window_start": 0.25, "window_end": 0.75}
A1111_AD = {"enable": True, "video_length": 12, "batch_size": 8}  # two overlapping context windows per step
FORGE_AD = {"enable": True, "video_length": 8, "batch_size": 8}  # Forge needs frames >= context


@pytest.fixture(params=["a1111", "forge"])
def ui(request, tmp_path):
    ui = WebUI(tmp_path, flavour=request.param)
    save_disc(tmp_path / "models")
    ui.flavour_name = request.param
    yield ui
    install_double("a1111")


def _host_blocks(ui):
    """The hosts' own resnet classes (a block of each kind the paths wrap) and the decoder's."""
    if ui.flavour_name == "forge":
        unet = ui.sd_model.forge_objects.unet.model.diffusion_model
        decoder = ui.sd_model.forge_objects.vae.first_stage_model.decoder
    else:
        unet, decoder = ui.sd_model.model.diffusion_model, ui.sd_model.first_stage_model.decoder
    res = [m for m in unet.modules() if type(m).__name__ == "ResBlock"][-1]  # after the cross-attention: on the
    # gradient path (the first one sees only latents and timesteps, so nothing of it is needed in the backward)
    dec = next(m for m in decoder.modules() if type(m).__name__ == "ResnetBlock")
    return res, dec


def _run(ui, monkeypatch, memory):
    """A guided job on one memory path: its result line, the tokens after every guided step, the video, and how
    often a UNet resnet's and a decoder resnet's inner layers ran with gradients on."""
    from motionprompt.engine.guidance import MotionGuide

    trail, calls = [], {"unet": 0, "decoder": 0}
    original = MotionGuide._optimize

    def spy(self, step, total, predict):
        original(self, step, total, predict)
        trail.append(self.tokens.detach().clone())
        kept.append(self.records[-1].saved_bytes["bytes"])

    kept = []

    res, dec = _host_blocks(ui)
    hooks = [m.register_forward_pre_hook(lambda *_, k=key: calls.__setitem__(k, calls[k] + torch.is_grad_enabled()))
             for key, block in (("unet", res), ("decoder", dec)) for m in block.children()]
    try:
        with monkeypatch.context() as m:
            m.setattr(MotionGuide, "_optimize", spy)
            ad = FORGE_AD if ui.flavour_name == "forge" else A1111_AD
            p, out = ui.generate({**MP, "memory": memory}, ad, prompt=TRAVEL)
    finally:
        for h in hooks:
            h.remove()
    assert not ui.errors, ui.errors
    assert not any("forward" in b.__dict__ for b in _all_blocks(ui)), "a wrapped forward was left behind"
    calls["kept"] = kept[0]  # bytes the first iteration kept for its backward, per phase
    return p.extra_generation_params["MotionPrompt result"], trail, out.samples, calls


def _all_blocks(ui):
    return [m for m in ui.sd_model.modules() if type(m).__name__ in
            {"ResBlock", "SpatialTransformer", "CrossAttention", "FeedForward", "VanillaTemporalModule", "ResnetBlock",
             "AttnBlock"}]


def test_every_memory_path_gives_the_same_tokens_and_video_and_recomputes_the_hosts_blocks(ui, monkeypatch):
    runs = {m: _run(ui, monkeypatch, m) for m in ("speed", "balanced", "low")}
    (t_s, trail_s, video_s, calls_s) = runs["speed"]
    assert len(trail_s) == 4 and not torch.equal(trail_s[0], trail_s[-1])  # the tokens moved
    for memory in ("balanced", "low"):
        text, trail, video, _calls = runs[memory]
        assert f"memory path {memory}" in text, text
        if memory == "balanced":  # the same kernels on the same batches, run again: bit-identical
            assert all(torch.equal(a, b) for a, b in zip(trail, trail_s, strict=True))
            assert torch.equal(video, video_s)
            continue
        # low decodes each pair frame alone, and a conv on a batch of 1 rounds differently from the pair batched:
        # measured on the doubles, tokens 1.9e-7 apart (scale 2) and videos 4e-7 of their scale; 5x that is allowed
        for a, b in zip(trail, trail_s, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6 * float(b.abs().max()))
        torch.testing.assert_close(video, video_s, rtol=0, atol=2e-6 * float(video_s.abs().max()))
    assert "memory path speed" in t_s
    # with gradients on, a resnet's layers run once per UNet call on speed and again in the backward when
    # checkpointed; the decoder's only on low
    assert runs["balanced"][3]["unet"] > calls_s["unet"] and runs["balanced"][3]["decoder"] == calls_s["decoder"]
    assert runs["low"][3]["decoder"] > calls_s["decoder"]
    # and the accounting sees what each path keeps (the hosts' own saved-tensor copies on Forge included)
    speed, balanced, low = (runs[m][3]["kept"] for m in ("speed", "balanced", "low"))
    assert balanced["unet"] < 0.6 * speed["unet"] and low["unet"] == balanced["unet"]
    assert low["decode"] < 0.8 * balanced["decode"] and balanced["decode"] == speed["decode"]


def test_forge_wraps_attention_parts_because_its_transformer_block_adds_in_place(tmp_path):
    """ldm_patched's BasicTransformerBlock adds into x after norm1 saved it (Forge's saved-tensor copies keep the
    plain backward right); a recompute skips autograd's version check, so a whole SpatialTransformer checkpointed
    gives a wrong gradient (float64), while its attention and feed-forward parts (FORGE_UNET_BLOCKS) give the
    plain one exactly."""
    WebUI(tmp_path, flavour="forge")
    try:
        from ldm_patched.ldm.modules.attention import SpatialTransformer

        from motionprompt.engine.checkpointing import checkpointed, find_blocks
        from motionprompt.hosts.webui import forge

        torch.manual_seed(0)
        block = SpatialTransformer(16, 2, 8, context_dim=32).double()
        x = torch.randn(2, 16, 4, 4, dtype=torch.float64, requires_grad=True)
        context = torch.randn(2, 5, 32, dtype=torch.float64, requires_grad=True)

        def grads(wrapped):
            with checkpointed(wrapped), forge.inplace_safe([block]):
                out = block(x * 1.0, context=context, transformer_options={})
            return torch.autograd.grad(out.square().sum(), [x, context])

        plain = grads([])
        parts = grads(find_blocks([block], forge.FORGE_UNET_BLOCKS))
        whole = grads([block])
    finally:
        install_double("a1111")
    assert all(torch.equal(a, b) for a, b in zip(parts, plain, strict=True))
    assert not torch.allclose(whole[0], plain[0], rtol=1e-6, atol=1e-9)


def test_too_little_free_memory_leaves_the_job_unguided_and_says_so(ui, monkeypatch):
    """auto, and the plan finds no path that fits the (simulated) free memory: no UNet call with gradients, the
    video is the plain one, and the result line says why."""
    from motionprompt.engine import memory_plan

    monkeypatch.setattr(memory_plan, "free_bytes", lambda device: 1)
    ad = FORGE_AD if ui.flavour_name == "forge" else A1111_AD
    _p, plain = ui.generate({"enabled": False}, ad, prompt=TRAVEL)
    p, guided = ui.generate(MP, ad, prompt=TRAVEL)
    text = p.extra_generation_params["MotionPrompt result"]
    assert text.startswith("not applied") and "not even the low-memory path fits" in text, text
    assert torch.equal(guided.samples, plain.samples)


def test_forge_runs_only_the_windows_the_scored_frames_come_from(tmp_path, monkeypatch):
    """12 frames with a context of 8 on Forge: AnimateDiff forge/master's own wrapper runs the windows, filtered
    while our call runs to those whose output a scored frame gets; its own sampling calls keep every window."""
    from motionprompt.engine import schedule
    from motionprompt.engine.config import preset
    from motionprompt.hosts.webui.animatediff import scoring_windows

    ui = WebUI(tmp_path, flavour="forge")
    save_disc(tmp_path / "models")
    try:
        from ldm_patched.ldm.modules.diffusionmodules.openaimodel import UNetModel
        from modules import script_callbacks

        from .webui_double_forge.animatediff import AnimateDiffInfV2V

        current, calls = [], []
        forward = UNetModel.forward

        def spy(self, x, *a, **k):
            calls.append((current[-1], torch.is_grad_enabled()))
            return forward(self, x, *a, **k)

        script_callbacks.callback_map["callbacks_cfg_denoiser"].insert(
            0, script_callbacks.ScriptCallback("spy", lambda params: current.append(params.denoiser.step), "spy"))
        monkeypatch.setattr(UNetModel, "forward", spy)
        ad = {"enable": True, "video_length": 12, "batch_size": 8}
        ui.generate({**MP, "seed": 5}, ad, prompt=TRAVEL)
        assert not ui.errors, ui.errors
        ap = ui.ad.mm_animatediff.ad_params
        cfg = preset("paper", seed=5)
        skipped = 0
        for step in range(2, 6):  # the guided steps (window 0.25-0.75 of 8)
            windows = list(AnimateDiffInfV2V.uniform(step, 12, 8, ap.stride, ap.overlap, ap.closed_loop))
            assert len(windows) == 2
            scored = [{f for pair in schedule.sample_pairs(cfg, 12, step, it) for f in pair} for it in range(2)]
            needed = sum(len(scoring_windows(windows, frames)) for frames in scored)
            grad = [c for c in calls if c == (step, True)]
            assert len(grad) == needed, (step, calls)
            skipped += 2 * len(windows) - needed
            assert len([c for c in calls if c == (step, False)]) >= len(windows)  # the sampler's own calls: all
        assert skipped > 0
    finally:
        install_double("a1111")


def test_a1111_unet_gradient_is_the_same_with_its_blocks_checkpointed_in_float64(tmp_path):
    """A1111's ldm UNet with AnimateDiff's motion modules in its blocks, two overlapping context windows and
    prompt-travel rows, in float64: x0 and its gradient w.r.t. the cond rows are identical with every resnet,
    spatial transformer and motion module checkpointed, and every wrapped forward is gone afterwards."""
    from types import SimpleNamespace

    from motionprompt.engine.checkpointing import checkpointed
    from motionprompt.hosts.webui.host import WebUIHost, predictor
    from motionprompt.hosts.webui.unet_path import UNetPath

    ui = WebUI(tmp_path)
    from modules import script_callbacks

    seen = {}

    def ours(params):
        den = params.denoiser
        if den.step != 3 or seen:
            return
        blocks = WebUIHost(ui.sd_model, None).checkpoint_blocks(decoder=False)
        seen["kinds"] = {type(b).__name__ for b in blocks}
        inner = den.inner_model
        inner.double()  # float32 -> float64 -> float32 is exact
        try:
            p64 = SimpleNamespace(denoiser=den, x=params.x.double(), sigma=params.sigma.double(),
                                  image_cond=params.image_cond.double(), text_uncond=params.text_uncond.double())
            torch.manual_seed(0)
            probe = torch.randn(12, 4, 8, 8, dtype=torch.float64)
            for wrapped in ([], blocks):
                cond = params.text_cond.double().clone().requires_grad_(True)
                with torch.enable_grad(), checkpointed(wrapped):
                    x0 = predictor(p64, 7.0, "cond", 12, True, UNetPath(True))(cond)
                    (grad,) = torch.autograd.grad((x0 * probe).sum(), [cond])
                seen[len(wrapped)] = (x0.detach(), grad)
            seen["left"] = [b for b in blocks if "forward" in b.__dict__]
        finally:
            inner.float()

    script_callbacks.on_cfg_denoiser(ours)
    ui.generate({"enabled": False}, A1111_AD, prompt=TRAVEL)
    assert not ui.errors, ui.errors
    assert seen["kinds"] == {"ResBlock", "SpatialTransformer", "VanillaTemporalModule"}
    (x0_p, g_p), (x0_c, g_c) = (v for k, v in seen.items() if isinstance(k, int))
    assert torch.equal(x0_c, x0_p) and torch.equal(g_c, g_p)
    assert g_p.abs().sum() > 0 and seen["left"] == []


@pytest.mark.parametrize(("optimizer", "swapped"), [("Doggettx", True), ("sub-quadratic", True), ("sdp", False),
                                                     ("xformers", False)])
def test_a1111_guided_steps_use_sdp_attention_where_the_active_one_keeps_matrices(tmp_path, monkeypatch, optimizer,
                                                                                  swapped):
    """A1111's Doggettx (its "Automatic" without --xformers) and the other sliced attentions keep every attention
    matrix for the backward and slice by the free memory at call time (a recompute would differ): our steps'
    UNet calls run A1111's own sdp forward instead (``sd_hijack_optimizations.scaled_dot_product_attention_forward``,
    faked here with torch's scaled_dot_product_attention), the host's own sampling calls keep the active one, and
    the class is as it was afterwards."""
    import sys
    import types

    import torch.nn.functional as F

    ui = WebUI(tmp_path)
    save_disc(tmp_path / "models")
    from ldm.modules.attention import CrossAttention
    from modules import sd_hijack

    calls = []

    def sdp_forward(self, x, context=None, mask=None, **kwargs):  # A1111's sdp forward, in short
        calls.append(torch.is_grad_enabled())
        h, context = self.heads, x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        b = q.shape[0]
        q, k, v = (t.reshape(b, t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, x.shape[1], -1))

    fake = types.ModuleType("modules.sd_hijack_optimizations")
    fake.scaled_dot_product_attention_forward = sdp_forward
    monkeypatch.setitem(sys.modules, "modules.sd_hijack_optimizations", fake)
    monkeypatch.setattr(sd_hijack, "current_optimizer", types.SimpleNamespace(name=optimizer), raising=False)
    original = CrossAttention.forward
    host_calls = []
    monkeypatch.setattr(CrossAttention, "forward",
                        lambda self, *a, **k: host_calls.append(torch.is_grad_enabled()) or original(self, *a, **k))
    patched = CrossAttention.forward
    p, _ = ui.generate(MP, A1111_AD, prompt=TRAVEL)
    assert not ui.errors, ui.errors
    assert "memory path speed" in p.extra_generation_params["MotionPrompt result"]
    assert CrossAttention.forward is patched  # restored
    if swapped:
        assert any(calls)  # our steps' UNet calls (with gradients, and the probe's without), through sdp
        assert host_calls and not any(host_calls)  # only the sampler's own calls (no gradients) kept the active one
    else:
        assert calls == [] and any(host_calls)
