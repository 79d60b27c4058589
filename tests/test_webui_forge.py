"""The real extension on the early-2024 Forge double (+ AnimateDiff forge/master), end to end: the A1111 acceptance
checks (guided differs from plain, gradients reach the tokens and no weight, faults fall back with a message,
interrupt, infotext/XYZ/API), plus what is Forge's own: inference mode, the B-row layout, the in-place residual adds,
weights moved inside inference mode (simulated GPU), LoRA-patched weights, and AnimateDiff forge/master's short-video
fault. The first tests pin the double to the facts measured in a real Forge (host_api.md §6.1)."""

import contextlib
import gc
import json
from pathlib import Path

import pytest
import torch

from .webui_host import WebUI, install_double, save_disc, small_forge_gpu

AD = {"enable": True, "video_length": 8, "batch_size": 8}  # context batch = video length, as Forge needs
MP = {"enabled": True, "discriminator": "disc.safetensors", "inner_iters": 2, "window_start": 0.25,
      "window_end": 0.75}


@pytest.fixture
def forge(tmp_path):
    ui = WebUI(tmp_path, flavour="forge")
    save_disc(tmp_path / "models")
    yield ui
    install_double("a1111")  # leave the process as the A1111 tests expect it


def _result(p):
    return p.extra_generation_params["MotionPrompt result"]


def _weights(ui):
    """Every UNet and motion-module weight of the last sampling (AnimateDiff's UnetPatcher clone)."""
    return ui.sd_model.sampling_weights()


# ---------------------------------------------------------------------------------------------- the double itself
def test_the_callback_sees_what_a_real_forge_hands_it(forge):
    """Measured in a real early-2024 Forge + AnimateDiff forge/master (8 frames, context 8): at the CFG callback
    inference mode is on and grad off; x [8,4,h,w], sigma [8], text_cond/text_uncond [8,77,D], image_cond [8,5,1,1],
    all inference tensors; the UNet then sees 16 rows with a 16-row context."""
    from ldm_patched.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from modules import script_callbacks

    seen, unet_rows = {}, []

    def spy(params):
        if params.denoiser.step == 1:
            seen.update(inference=torch.is_inference_mode_enabled(), grad=torch.is_grad_enabled(),
                        shapes=[tuple(t.shape) for t in (params.x, params.sigma, params.text_cond, params.text_uncond,
                                                         params.image_cond)],
                        all_inference=all(t.is_inference() for t in (params.x, params.sigma, params.text_cond,
                                                                      params.text_uncond, params.image_cond)))

    forward = UNetModel.forward

    def rows(self, x, timesteps=None, context=None, **kwargs):
        unet_rows.append((x.shape[0], context.shape[0]))
        return forward(self, x, timesteps, context, **kwargs)

    script_callbacks.on_cfg_denoiser(spy)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(UNetModel, "forward", rows)
        forge.generate({"enabled": False}, AD)
    assert seen == {"inference": True, "grad": False, "all_inference": True,
                    "shapes": [(8, 4, 8, 8), (8,), (8, 77, 32), (8, 77, 32), (8, 5, 1, 1)]}
    assert set(unet_rows) == {(16, 16)}


def test_the_double_fails_where_a_real_forge_fails(forge, monkeypatch):
    """Without the in-place-safe backward: "modified by an inplace operation" (ldm_patched BasicTransformerBlock
    ``x += n``); with weights moved inside inference mode (GPU) and no re-materialisation: "Inference tensors cannot
    be saved for backward". Either way the job finishes unguided and says why."""
    from ldm_patched.modules import model_management

    from motionprompt.hosts.webui import forge as forge_path

    with monkeypatch.context() as m:
        m.setattr(forge_path, "inplace_safe", lambda modules: contextlib.nullcontext())
        p, _ = forge.generate(MP, AD)
    assert "modified by an inplace operation" in _result(p), _result(p)
    model_management.simulate_device_move = True
    model_management.unload_all_models()
    with monkeypatch.context() as m:
        m.setattr(forge_path, "rematerialise", lambda modules: 0)
        p, res = forge.generate(MP, AD)
    assert "Inference tensors cannot be saved for backward" in _result(p), _result(p)
    assert len(res.images) == 8 and not forge.errors


def test_animatediff_forge_master_leaves_the_cond_half_of_a_short_video_uncomputed(forge):
    """Upstream fault the double must keep (measured: cond prediction exactly 0): video 8 frames, context 16."""
    from modules_forge import forge_sampler

    conds = []
    original = forge_sampler.sampling_function

    def spy(model, x, timestep, uncond, cond, cond_scale, model_options, seed):
        def record(args):
            conds.append(args["cond_denoised"].clone())
            return args["denoised"]

        model_options = {**model_options, "sampler_post_cfg_function": [record]}
        return original(model, x, timestep, uncond, cond, cond_scale, model_options, seed)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(forge_sampler, "sampling_function", spy)
        p, _ = forge.generate({"enabled": False}, {"enable": True, "video_length": 8})
    assert p.batch_size == 16 and conds and all(torch.count_nonzero(c) == 0 for c in conds)


# ---------------------------------------------------------------------------------------------- acceptance
def test_guided_forge_job_runs_end_to_end(forge):
    from modules import processing

    _p, plain = forge.generate({"enabled": False}, AD)
    cache = list(processing.StableDiffusionProcessing.cached_c)
    flags = [w.requires_grad for w in _weights(forge)]
    p, res = forge.generate(MP, AD)
    assert not forge.errors, forge.errors
    text = _result(p)
    assert text.startswith("4 steps x 2 it"), text
    assert "input-level tokens" in text and "cond-only UNet via Forge calc_cond_uncond_batch" in text
    assert "discriminator: disc.safetensors" in res.infotexts[0] and "MotionPrompt result" in res.infotexts[0]
    assert len(res.images) == 8
    assert not torch.allclose(res.samples, plain.samples)  # the optimized conditioning reached Forge's UNet
    weights = _weights(forge)
    assert all(w.grad is None for w in weights) and [w.requires_grad for w in weights] == flags
    assert processing.StableDiffusionProcessing.cached_c[0] == cache[0]
    report = next(c for c in p.comments if "report" in c).rsplit("report ", 1)[1]
    summary = json.loads(Path(report).with_suffix(".json").read_text(encoding="utf-8"))["summary"]
    assert summary["host"] == "Forge 0.0.17v1.8.0rc" and summary["steps_guided"] == 4


def test_tokens_get_a_gradient_through_forges_unet(forge, monkeypatch):
    from motionprompt.engine.guidance import MotionGuide

    norms = []
    original = MotionGuide._iteration

    def spy(self, *a, **k):
        rec = original(self, *a, **k)
        norms.append(rec.grad_norm)
        return rec

    monkeypatch.setattr(MotionGuide, "_iteration", spy)
    forge.generate(MP, AD)
    assert len(norms) == 8 and all(n > 0 and n == n for n in norms), norms
    assert all(w.grad is None for w in _weights(forge))


@pytest.mark.parametrize("sampler", ["Euler", "DDIM"])
@pytest.mark.parametrize("mode", ["cond", "cfg"])
def test_predicted_x0_is_forges_own(forge, sampler, mode):
    """Our predictor against what Forge's sampling_function computes at the same step: the cond prediction
    (``cond_denoised``) and the CFG result, for a k-diffusion and a timestep sampler (Forge hands the callback
    sigma-space x/sigma for both; the UNet path returns x0)."""
    from modules import script_callbacks

    from motionprompt.hosts.webui import animatediff
    from motionprompt.hosts.webui.forge import forge_predictor, unet_of

    mine, host = {}, {}

    def ours(params):  # after AnimateDiff's callback: its text_cond and step are in place
        if params.denoiser.step != 2 or mine:
            return
        with torch.inference_mode(False), torch.no_grad():
            predict, _rows = forge_predictor(params, params.denoiser.p, 7.0, mode, animatediff.state())
            mine["x0"] = predict(params.text_cond)

        def record(args):
            if "cond" not in host:
                host["cond"], host["cfg"] = args["cond_denoised"].clone(), args["denoised"].clone()
            return args["denoised"]

        unet_of(params).model_options["sampler_post_cfg_function"] = [record]

    script_callbacks.on_cfg_denoiser(ours)
    forge.generate({"enabled": False}, AD, sampler_name=sampler)
    assert not forge.errors, forge.errors
    torch.testing.assert_close(mine["x0"], host["cond" if mode == "cond" else "cfg"], rtol=1e-4, atol=1e-5)


def test_weights_moved_inside_inference_mode_are_rematerialised_without_changing_plain_jobs(forge):
    """Simulated GPU: every load allocates new weights inside the job's inference mode (inference tensors). A guided
    job still works, leaves ordinary tensors holding the same values (no second copy alive), and plain jobs before
    and after it are bit-identical; after Forge moves the models again the next guided job re-materialises again."""
    from ldm_patched.modules import model_management

    model_management.simulate_device_move = True
    model_management.unload_all_models()
    _p, plain_before = forge.generate({"enabled": False}, AD)
    assert all(w.is_inference() for w in _weights(forge))
    assert any(inference for _name, inference in model_management.moves)
    p, _ = forge.generate(MP, AD)
    assert _result(p).startswith("4 steps x 2 it"), _result(p)
    assert not any(w.is_inference() for w in _weights(forge))
    clip, vae = forge.sd_model.forge_objects.clip.cond_stage_model, forge.sd_model.forge_objects.vae.first_stage_model
    assert not any(w.is_inference() for m in (clip, vae) for w in m.parameters())
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, torch.Tensor) and not isinstance(o, torch.nn.Parameter)
             and o.is_inference() and o.dim() == 4 and o.shape[0] > 8]
    assert not alive  # no old conv weights kept anywhere (the 4-D weights of the UNet/VAE)
    _p, plain_after = forge.generate({"enabled": False}, AD)
    assert torch.equal(plain_before.samples, plain_after.samples)
    model_management.unload_all_models()
    forge.generate({"enabled": False}, AD)
    assert all(w.is_inference() for w in _weights(forge))
    p, _ = forge.generate(MP, AD)
    assert _result(p).startswith("4 steps x 2 it"), _result(p)
    assert all(w.grad is None for w in _weights(forge))


def test_a_guided_job_on_a_small_gpu_gets_the_sampling_models_back_after_each_text_encode(forge):
    """With a device too small for the UNet and the CLIP together, encoding the tokens (at the first step, where the
    init tokens are encoded, and in every inner iteration) pushes sampling weights out; the UNet must be loaded again
    before anything runs it, ours or Forge's next step (the first step did not: Forge's UNet call then failed)."""
    from ldm_patched.modules import model_management

    small_forge_gpu(forge)
    _p, before = forge.generate({"enabled": False}, AD)
    loaded = [(type(m.model.model).__name__, m.model_memory()) for m in model_management.current_loaded_models]
    assert sum(size for _name, size in loaded) <= model_management.vram_bytes
    assert "ClipModel" not in [name for name, _size in loaded]  # evicted for sampling
    p, guided = forge.generate(MP, AD)
    assert not forge.errors, forge.errors
    assert _result(p).startswith("4 steps x 2 it"), _result(p)
    _p, after = forge.generate({"enabled": False}, AD)
    assert torch.equal(before.samples, after.samples) and not torch.allclose(guided.samples, before.samples)


def test_lora_patched_weights_are_inference_tensors_even_on_cpu(forge):
    """Forge patches LoRA weights in ``patch_model`` inside the job's inference mode: new Parameters
    (requires_grad=False) that are inference tensors on CPU too. Guidance works over them and a plain job after
    it is unchanged."""
    unet = forge.sd_model.forge_objects_after_applying_lora.unet.clone()
    key = "diffusion_model.middle_block.1.proj_in.weight"
    torch.manual_seed(3)
    unet.add_patches({key: 0.05 * torch.randn_like(unet.model.state_dict()[key])})
    forge.sd_model.forge_objects_after_applying_lora.unet = unet
    _p, plain_before = forge.generate({"enabled": False}, AD)
    patched = forge.sd_model.forge_objects.unet.model.diffusion_model.middle_block[1].proj_in.weight
    assert patched.is_inference() and not patched.requires_grad
    p, _ = forge.generate(MP, AD)
    assert _result(p).startswith("4 steps x 2 it"), _result(p)
    _p, plain_after = forge.generate({"enabled": False}, AD)
    assert torch.equal(plain_before.samples, plain_after.samples)


def test_short_video_is_refused_with_the_context_batch_advice(forge, monkeypatch):
    _p, plain = forge.generate({"enabled": False}, {"enable": True, "video_length": 8})
    p, res = forge.generate(MP, {"enable": True, "video_length": 8})
    text = _result(p)
    assert text.startswith("not applied") and "set AnimateDiff's Context batch size to 8" in text, text
    assert torch.equal(res.samples, plain.samples)
    from motionprompt.hosts.webui import forge as forge_path

    monkeypatch.setattr(forge_path, "problem", lambda ad: None)  # past the pre-flight check: the predictor refuses
    p, res = forge.generate(MP, {"enable": True, "video_length": 8})
    assert "ForgeLayoutError" in _result(p) and "Context batch size to 8" in _result(p), _result(p)
    assert torch.equal(res.samples, plain.samples)


@pytest.mark.parametrize(("case", "message"), [
    ("missing", "file not found"),
    ("none", "no discriminator selected"),
    ("ad_off", "AnimateDiff is off for this generation"),
    ("budget", "needs more than one 75-token chunk"),
    ("master_ad", "not the Forge branch"),
    ("flow_fails", "RuntimeError at step 2: boom"),
])
def test_every_fault_finishes_the_forge_job_unguided_and_says_why(forge, monkeypatch, case, message):
    _p, plain = forge.generate({"enabled": False}, AD)
    args, ad, prompt = dict(MP), dict(AD), "a white fox running"
    if case == "missing":
        args["discriminator"] = "nope.safetensors"
    elif case == "none":
        args["discriminator"] = ""
    elif case == "ad_off":
        ad = {"enable": False}
    elif case == "budget":
        prompt = " ".join(["fox"] * 75)
    elif case == "master_ad":  # what our code sees of a non-Forge AnimateDiff: no forge/master wrapper
        import sys

        monkeypatch.setattr(sys.modules["scripts.animatediff_infv2v"], "AnimateDiffInfV2V", type("Master", (), {}))
    elif case == "flow_fails":
        from motionprompt.hosts.webui import run

        class Boom(torch.nn.Module):
            def forward(self, *a, **k):
                raise RuntimeError("boom")

        original = run.GuidedRun.__init__

        def patched(self, p, a, cfg, disc, flow):
            boom = Boom()
            boom.settings = flow.settings
            original(self, p, a, cfg, disc, boom)

        monkeypatch.setattr(run.GuidedRun, "__init__", patched)
    p, res = forge.generate(args, ad, prompt=prompt)
    text = _result(p)
    assert text.startswith("not applied") and message in text, text
    assert any(message in c for c in p.comments)
    assert len(res.images) == (8 if case != "ad_off" else 1)
    if case in ("missing", "none", "master_ad", "flow_fails"):
        assert torch.equal(res.samples, plain.samples)
    assert not forge.errors, forge.errors


def test_interrupt_between_inner_iterations_on_forge(forge, monkeypatch):
    from modules import shared

    from motionprompt.engine.guidance import MotionGuide
    from motionprompt.hosts.webui import run

    iterations = []
    original = MotionGuide._iteration

    def counting(self, step, it, *a):
        iterations.append((step, it))
        if step == 3:
            shared.state.interrupted = True
        return original(self, step, it, *a)

    monkeypatch.setattr(MotionGuide, "_iteration", counting)
    try:
        p, res = forge.generate(MP, AD)
    finally:
        shared.state.interrupted = False
    assert iterations == [(2, 0), (2, 1), (3, 0)]
    assert len(res.images) == 8 and _result(p).startswith("2 steps x 2 it")
    assert not run._RUNS and not forge.errors


def test_api_dict_and_ui_values_give_the_same_forge_run(forge):
    """The UI hands forge/master an AnimateDiffProcess, the API a dict it converts (``get_animatediff_arg`` when
    ``p.is_api``); MotionPrompt's positional UI values and its API dict give the same guided video."""
    from motionprompt.hosts.webui.args import MotionPromptArgs

    names = MotionPromptArgs.field_names()
    values = dict(zip(names, forge.ui_defaults()[forge.mp.args_from:forge.mp.args_to], strict=True))
    values.update(enabled=True, discriminator="disc.safetensors", inner_iters=2, window_start=0.25, window_end=0.75)
    p_ui, res_ui = forge.generate([values[n] for n in names], AD)
    p_api, res_api = forge.generate(MP, AD)
    assert not p_ui.is_api and p_api.is_api
    assert torch.allclose(res_ui.samples, res_api.samples, atol=1e-6)
    assert p_ui.extra_generation_params["MotionPrompt"] == p_api.extra_generation_params["MotionPrompt"]
    assert "AnimateDiff" in p_api.extra_generation_params


def test_xyz_cell_overrides_on_forge(forge):
    from modules import processing

    class Cell(processing.StableDiffusionProcessingTxt2Img):
        motionprompt_xyz = {"enabled": "True", "inner_iters": 1}  # noqa: RUF012

    args = forge.ui_defaults()
    args[forge.mp.args_from] = {**MP, "enabled": False}
    ad_script = next(s for s in forge.runner.alwayson_scripts if s.title() == "AnimateDiff")
    args[ad_script.args_from] = dict(AD)
    p = Cell(sd_model=forge.sd_model, scripts=forge.runner, script_args=args, prompt="a fox", steps=8,
             outpath_samples=str(forge.outputs))
    p.is_api = True
    processing.process_images(p)
    assert _result(p).startswith("4 steps x 1 it"), _result(p)


def test_callback_order_and_windows_on_forge(tmp_path):
    """Ours before or after AnimateDiff's callback (which sets ad_params.step first and text_cond every step): the
    same video; with 12 frames over a context of 8 every guided UNet call runs AnimateDiff's windows."""
    long = {"enable": True, "video_length": 12, "batch_size": 8}
    samples = []
    try:
        for order in (("animatediff", "motionprompt"), ("motionprompt", "animatediff")):
            ui = WebUI(tmp_path / order[0], order=order, flavour="forge")
            save_disc(tmp_path / order[0] / "models")
            p, res = ui.generate(MP, long, prompt="a fox\n0: running\n6: jumping\nsnow")
            assert not ui.errors, ui.errors
            assert _result(p).startswith("4 steps x 2 it"), _result(p)
            assert len(res.images) == 12
            samples.append(res.samples)
    finally:
        install_double("a1111")
    torch.testing.assert_close(samples[0], samples[1], rtol=0, atol=1e-5)


def test_forge2_keeps_loading_with_a_precise_message_and_the_training_tab(tmp_path, monkeypatch):
    """Forge 2 (current main): forge_objects on the model, a ``backend`` package, no ldm_patched, and a CFG denoiser
    that does not import forge_sampler. Guidance says why not; the accordion says so; the tab is there."""
    import importlib.machinery
    import sys
    import types

    ui = WebUI(tmp_path, flavour="a1111")
    save_disc(tmp_path / "models")
    for name in ("backend", "modules_forge"):
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        monkeypatch.setitem(sys.modules, name, mod)
    ui.sd_model.forge_objects = types.SimpleNamespace(unet=object())
    p, res = ui.generate(MP, AD)
    text = _result(p)
    assert text.startswith("not applied: Forge is not supported for guidance on Forge 2"), text
    assert "early-2024 Forge (git tag 'previous') or reForge" in text and len(res.images) == 8
    from modules import script_callbacks

    from motionprompt.hosts.webui import flavour, widgets

    assert flavour.ui_kind() == flavour.FORGE2
    assert "unavailable on Forge 2" in widgets.status_line()
    assert [t for _b, t, _e in script_callbacks.ui_tabs_callback()] == ["MotionPrompt"]
    assert not ui.errors


# ---------------------------------------------------------------------------------------------- the two mechanisms
def test_rematerialise_gives_ordinary_weights_with_the_same_values_and_keeps_no_copy():
    """A module moved inside inference mode (GPU) and a Parameter created there (LoRA patch): afterwards ordinary
    tensors, same values and flags, autograd through them works, and no inference copy of them is left alive."""
    from motionprompt.hosts.webui.forge import rematerialise

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 11, 3), torch.nn.BatchNorm2d(11), torch.nn.Conv2d(11, 13, 1))
    with torch.inference_mode():
        net._apply(lambda t: t.clone())  # what Module.to(cuda) does to every weight
        net[2].weight = torch.nn.Parameter(net[2].weight.detach() * 2, requires_grad=False)  # utils.set_attr
    before = {k: v.clone() for k, v in net.state_dict().items()}
    flags = [p.requires_grad for p in net.parameters()]
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(net(x).sum(), [x])
    assert rematerialise([net]) == len(list(net.parameters())) + len(list(net.buffers()))
    assert rematerialise([net]) == 0  # nothing left to do
    assert not any(t.is_inference() for t in (*net.parameters(), *net.buffers()))
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert [p.requires_grad for p in net.parameters()] == flags
    (g,) = torch.autograd.grad(net(x).sum(), [x])
    assert g.abs().sum() > 0
    gc.collect()
    shapes = {tuple(t.shape) for t in before.values() if t.dim() == 4}
    assert not [o for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.is_inference()
                and tuple(o.shape) in shapes]


def test_inplace_safe_backward_equals_the_out_of_place_gradient():
    """ldm_patched's ``x += n`` after ``norm(x)``: a plain backward fails; under ``inplace_safe`` the gradient is the
    one an out-of-place version of the same block gives."""
    from motionprompt.hosts.webui.forge import inplace_safe

    torch.manual_seed(0)
    norm, lin = torch.nn.LayerNorm(6), torch.nn.Linear(6, 6)

    def block(x, inplace):
        n = lin(norm(x))
        if inplace:
            x += n
            x += lin(norm(x))
            return x
        x = x + n
        return x + lin(norm(x))

    c = torch.randn(4, 6, requires_grad=True)
    with pytest.raises(RuntimeError, match="inplace operation"):
        torch.autograd.grad(block(c * 1.0, True).square().sum(), [c])
    with inplace_safe([norm, lin]):
        out = block(c * 1.0, True)
    (g_safe,) = torch.autograd.grad(out.square().sum(), [c])
    (g_ref,) = torch.autograd.grad(block(c * 1.0, False).square().sum(), [c])
    torch.testing.assert_close(g_safe, g_ref, rtol=0, atol=1e-6)
    assert all(p.grad is None for p in (*norm.parameters(), *lin.parameters()))
