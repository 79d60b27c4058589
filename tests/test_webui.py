"""The real extension (scripts/ entry, UI, hooks, callback) driven end to end through the WebUI double."""

from pathlib import Path

import pytest
import torch

from .webui_host import WebUI, save_disc

AD = {"enable": True, "video_length": 8, "batch_size": 8}
MP = {"enabled": True, "discriminator": "disc.safetensors", "inner_iters": 2, "window_start": 0.25,
      "window_end": 0.75}


@pytest.fixture
def webui(tmp_path):
    ui = WebUI(tmp_path)
    save_disc(tmp_path / "models")
    return ui


def _weights(sd_model):
    return list(sd_model.model.parameters())


def test_guided_animatediff_job_runs_end_to_end(webui):
    from modules import processing

    _plain_p, plain = webui.generate({"enabled": False}, AD)
    cache_before = list(processing.StableDiffusionProcessing.cached_c)
    p, res = webui.generate(MP, AD)
    assert not webui.errors, webui.errors
    run_text = p.extra_generation_params["MotionPrompt result"]
    assert run_text.startswith("4 steps x 2 it"), run_text  # steps 2..5 of 8
    assert "input-level tokens" in run_text
    assert "MotionPrompt: " in res.infotexts[0] and "discriminator: disc.safetensors" in res.infotexts[0]
    assert len(res.images) == 8
    assert not torch.allclose(res.samples, plain.samples)  # the optimized conditioning reached the UNet
    assert all(w.grad is None for w in _weights(webui.sd_model))  # autograd.grad only: no .grad on UNet
    assert all(w.requires_grad for w in _weights(webui.sd_model))  # ... and the host's flags untouched
    assert processing.StableDiffusionProcessing.cached_c[0] == cache_before[0]
    assert webui.ad.mm_animatediff.ad_params.text_cond is not None
    metrics = p.extra_generation_params["MotionPrompt metrics"]
    assert "warp error" in metrics and "flicker" in metrics and "D 0." in metrics
    report = next(c for c in p.comments if "report" in c).rsplit("report ", 1)[1]
    page = Path(report).read_text(encoding="utf-8")
    assert "<svg" in page and "polyline" in page and "steps_guided" in page and "tv_first" in page


@pytest.mark.parametrize("order", [("animatediff", "motionprompt"), ("motionprompt", "animatediff")])
def test_either_callback_order_injects_the_same_conditioning(tmp_path, order):
    """Ours before or after AnimateDiff's callback: the UNet sees the same optimized cond."""
    ui = WebUI(tmp_path, order=order)
    save_disc(tmp_path / "models")
    seen = []
    inner_calls = []

    from modules import script_callbacks

    def spy(params):  # registered last: sees what the CFG denoiser will read back
        seen.append(params.text_cond.clone())
        inner_calls.append(params.denoiser.step)

    script_callbacks.on_cfg_denoiser(spy)
    _p, res = ui.generate(MP, AD)
    assert not ui.errors, ui.errors
    test_either_callback_order_injects_the_same_conditioning.results[order] = (seen, res.samples)


test_either_callback_order_injects_the_same_conditioning.results = {}


def test_callback_orders_agree():
    results = test_either_callback_order_injects_the_same_conditioning.results
    if len(results) < 2:
        pytest.skip("needs both parametrized order runs (run the module, not a single test)")
    (seen_a, samples_a), (seen_b, samples_b) = results.values()
    assert len(seen_a) == len(seen_b) == 8
    for a, b in zip(seen_a, seen_b, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(seen_a[1], seen_a[3])  # step 3 carries optimized tokens, step 1 the prompt
    assert torch.allclose(seen_a[1], seen_a[7], atol=1e-6)  # original prompt restored after the window
    assert torch.allclose(samples_a, samples_b, atol=1e-5)


def test_api_dict_and_ui_positional_args_give_the_same_run(webui):
    from motionprompt.webui.args import MotionPromptArgs

    positional = webui.ui_defaults()[webui.mp.args_from:webui.mp.args_to]
    names = MotionPromptArgs.field_names()
    values = dict(zip(names, positional, strict=True))
    values.update(enabled=True, discriminator="disc.safetensors", inner_iters=2, window_start=0.25, window_end=0.75)
    p_ui, res_ui = webui.generate([values[n] for n in names], AD)
    p_api, res_api = webui.generate(MP, AD)
    assert torch.allclose(res_ui.samples, res_api.samples, atol=1e-6)
    assert p_ui.extra_generation_params["MotionPrompt"] == p_api.extra_generation_params["MotionPrompt"]


def test_infotext_round_trip_restores_every_field(webui):
    from modules import script_callbacks

    from motionprompt.webui.args import MotionPromptArgs

    args = MotionPromptArgs.from_dict({**MP, "lambda_tv": 0.25, "pairs": 2, "flow_backend": "lk_pyramid"})
    params = {"MotionPrompt": args.to_infotext(), "Steps": "8"}
    script_callbacks.infotext_pasted_callback("", params)
    fields = {key: comp for comp, key in webui.mp.infotext_fields if isinstance(key, str)}
    pasted = {key[len("MotionPrompt "):]: params[key] for key in fields if key in params}
    assert pasted["lambda_tv"] == "0.25" and pasted["pairs"] == "2" and pasted["discriminator"] == "disc.safetensors"
    enabled_mapper = next(k for _c, k in webui.mp.infotext_fields if callable(k))
    assert enabled_mapper(params) is True and enabled_mapper({"Steps": "8"}) is False
    back = MotionPromptArgs.from_dict({"enabled": True, **pasted})
    assert back == args


def test_xyz_axes_override_ui_values_per_cell(webui):
    from modules import script_callbacks, scripts

    xyz = _fake_xyz_module()
    scripts.scripts_data.append(scripts.ScriptClassData(type("XYZ", (), {"__module__": "xyz_grid.py"}), "", "", xyz))
    script_callbacks.before_ui_callback()
    script_callbacks.before_ui_callback()  # UI reload: no duplicates
    labels = [o.label for o in xyz.axis_options]
    assert labels.count("[MotionPrompt] Enabled") == 1 and "[MotionPrompt] Inner iterations" in labels
    from modules import processing

    base = processing.StableDiffusionProcessingTxt2Img()
    cells = []
    for value in (1, 3):
        cell = __import__("copy").copy(base)  # xyz_grid copies p shallowly per cell
        next(o for o in xyz.axis_options if o.label == "[MotionPrompt] Inner iterations").apply(cell, value, None)
        cells.append(cell)
    assert [c.motionprompt_xyz["inner_iters"] for c in cells] == [1, 3]
    assert not hasattr(base, "motionprompt_xyz")
    off = {"enabled": False, "discriminator": "disc.safetensors"}

    class Overriding(processing.StableDiffusionProcessingTxt2Img):
        motionprompt_xyz = {"enabled": "True", "inner_iters": 1, "window_start": 0.25, "window_end": 0.75}  # noqa: RUF012

    p, _ = _generate_with_class(webui, Overriding, off)
    assert p.extra_generation_params["MotionPrompt result"].startswith("4 steps x 1 it")


def test_xyz_off_cell_is_measured_like_the_on_cell(webui):
    """A fair A/B: the cell an XYZ axis switches off gets the same metrics, D score included."""
    from modules import processing

    class OffCell(processing.StableDiffusionProcessingTxt2Img):
        motionprompt_xyz = {"enabled": "False"}  # noqa: RUF012

    p, _ = _generate_with_class(webui, OffCell, {**MP, "enabled": True})
    assert "MotionPrompt result" not in p.extra_generation_params  # not guided ...
    metrics = p.extra_generation_params["MotionPrompt metrics"]  # ... but measured, with the same D
    assert metrics.endswith("unguided") and "warp error" in metrics and "D 0." in metrics
    plain_p, _ = webui.generate({"enabled": False}, AD)  # no XYZ axis and the setting off: nothing added
    assert "MotionPrompt metrics" not in plain_p.extra_generation_params


def test_a_job_that_raised_before_postprocess_leaves_no_run_behind(webui, monkeypatch):
    """A1111 calls postprocess only when sampling returned; the next job must not inherit the dead run."""
    from modules import processing

    from motionprompt.webui import run as runs

    def broken_sample(self, *args, **kwargs):
        raise RuntimeError("sampler exploded")

    with monkeypatch.context() as m:
        m.setattr(processing.StableDiffusionProcessingTxt2Img, "sample", broken_sample)
        with pytest.raises(RuntimeError, match="exploded"):
            webui.generate(MP, AD)
    assert len(runs._RUNS) == 1  # the dead job's run, holding its tensors
    p, _ = webui.generate(MP, AD)
    assert [r.p for r in runs._RUNS] == []  # finished at the next process(), and this job's after postprocess
    assert p.extra_generation_params["MotionPrompt result"].startswith("4 steps x 2 it")


def _fake_xyz_module():
    import types

    class AxisOption:
        def __init__(self, label, type, apply, format_value=None, confirm=None, cost=0.0, choices=None):
            self.label, self.type, self.apply, self.choices = label, type, apply, choices

    mod = types.SimpleNamespace(axis_options=[], AxisOption=AxisOption,
                                boolean_choice=lambda reverse=False: lambda: ["False", "True"] if reverse else ["True", "False"])
    return mod


def _generate_with_class(webui, cls, mp_args):
    from modules import processing

    args = webui.ui_defaults()
    args[webui.mp.args_from] = mp_args
    ad_script = next(s for s in webui.runner.alwayson_scripts if s.title() == "AnimateDiff")
    args[ad_script.args_from] = dict(AD)
    p = cls(sd_model=webui.sd_model, scripts=webui.runner, script_args=args, prompt="a fox", steps=8,
            outpath_samples=str(webui.outputs))
    return p, processing.process_images(p)


def test_prompt_travel_keeps_working_with_tokens_on_every_frame(webui):
    travel = "a fox\n0: running\n4: jumping\nsnow"
    _plain_p, plain = webui.generate({"enabled": False}, AD, prompt=travel)
    p, res = webui.generate(MP, AD, prompt=travel)
    assert not webui.errors, webui.errors
    assert "input-level tokens" in p.extra_generation_params["MotionPrompt result"]
    assert len(set(p.prompts)) == 2  # two key-frame prompts, both encoded with the tokens
    assert not torch.allclose(res.samples, plain.samples)


def test_freeinit_iterations_each_get_guidance(webui):
    p, _ = webui.generate(MP, {**AD, "freeinit_enable": True, "freeinit_iters": 2})
    text = p.extra_generation_params["MotionPrompt result"]
    assert text.startswith("8 steps x 2 it; 2 passes"), text
    assert not webui.errors


def test_video_longer_than_one_context_window_is_guided_through_every_window(webui):
    p, res = webui.generate(MP, {"enable": True, "video_length": 12, "batch_size": 8})
    assert not webui.errors, webui.errors
    assert len(res.images) == 12
    assert p.extra_generation_params["MotionPrompt result"].startswith("4 steps"), p.extra_generation_params


@pytest.mark.parametrize(("sampler", "guided"), [("DDIM", 4), ("Heun", 4)])
def test_timestep_and_second_order_samplers(webui, sampler, guided):
    """DDIM: eps -> x0 through get_pred_x0; Heun: two calls per step, optimized once per step."""
    p, _ = webui.generate(MP, AD, sampler_name=sampler)
    assert not webui.errors, webui.errors
    assert p.extra_generation_params["MotionPrompt result"].startswith(f"{guided} steps x 2 it")


def test_get_pred_x0_matches_the_closed_forms(webui):
    from modules import prompt_parser, script_callbacks

    from motionprompt.webui.host import predictor

    checked = []

    def check(params):
        if params.denoiser.step != 2 or checked:
            return
        den = params.denoiser
        b = params.text_uncond.shape[0]
        x0 = predictor(params, 7.0, "cond")(params.text_cond)
        sd = webui.sd_model
        cond = {"c_crossattn": [torch.cat([params.text_cond, params.text_uncond])], "c_concat": [params.image_cond]}
        if hasattr(den, "alphas"):  # DDIM: model output is eps at integer timesteps
            t = params.sigma[:b].long()
            eps = sd.apply_model(params.x, params.sigma, cond)[:b]
            a = sd.alphas_cumprod[t][:, None, None, None]
            ref = (params.x[:b] - (1 - a).sqrt() * eps) / a.sqrt()
        else:  # k-diffusion eps model: x0 = x - sigma * eps(x / sqrt(sigma^2 + 1), t(sigma))
            s = params.sigma[:, None, None, None]
            t = den.inner_model.sigma_to_t(params.sigma)
            eps = sd.apply_model(params.x / (s**2 + 1).sqrt(), t, cond)
            ref = (params.x - s * eps)[:b]
        checked.append(torch.allclose(x0, ref, atol=1e-4))
        assert prompt_parser is not None

    script_callbacks.on_cfg_denoiser(check)
    for sampler in ("Euler", "DDIM"):
        checked.clear()
        webui.generate({"enabled": False}, AD, sampler_name=sampler)
        assert checked == [True], sampler


@pytest.mark.parametrize(("case", "message"), [
    ("missing", "file not found"),
    ("corrupt", "not a readable safetensors file"),
    ("none", "no discriminator selected"),
    ("ad_off", "AnimateDiff is off for this generation"),
    ("budget", "needs more than one 75-token chunk"),
    ("lowvram", "--medvram/--lowvram"),
    ("forge", "Forge is not supported"),
])
def test_every_fault_finishes_the_generation_unguided_and_says_why(webui, tmp_path, case, message):
    from modules import processing

    _plain_p, plain = webui.generate({"enabled": False}, AD)
    args, ad, prompt = dict(MP), dict(AD), "a white fox running"
    if case == "missing":
        args["discriminator"] = "nope.safetensors"
    elif case == "corrupt":
        (tmp_path / "models" / "MotionPrompt" / "bad.safetensors").write_bytes(b"\x00" * 40)
        args["discriminator"] = "bad.safetensors"
    elif case == "none":
        args["discriminator"] = ""
    elif case == "ad_off":
        ad = {"enable": False}
    elif case == "budget":
        prompt = " ".join(["fox"] * 75)
    elif case == "lowvram":
        webui.sd_model.lowvram = True
    elif case == "forge":
        webui.sd_model.forge_objects = object()
    cache = list(processing.StableDiffusionProcessing.cached_c)
    p, res = webui.generate(args, ad, prompt=prompt)
    text = p.extra_generation_params["MotionPrompt result"]
    assert text.startswith("not applied") and message in text, text
    assert any(message in c for c in p.comments)
    assert "MotionPrompt result" in res.infotexts[0]
    assert len(res.images) == (8 if case != "ad_off" else 1)
    if case in ("missing", "corrupt", "none", "lowvram", "forge"):
        assert torch.equal(res.samples, plain.samples)  # identical to a plain run
    if case not in ("budget", "ad_off"):  # other prompts / batch size: the host re-keys its cache itself
        assert processing.StableDiffusionProcessing.cached_c[0] == cache[0]
    assert not webui.errors, webui.errors


class _Boom(torch.nn.Module):
    def __init__(self, exc):
        super().__init__()
        self.exc = exc

    def forward(self, *a, **k):
        raise self.exc


@pytest.mark.parametrize(("exc", "words"), [
    (torch.cuda.OutOfMemoryError("CUDA out of memory"), "out of memory at step 2"),
    (RuntimeError("boom"), "RuntimeError at step 2: boom"),
])
def test_failure_mid_sampling_restores_animatediff_conditioning(webui, monkeypatch, exc, words):
    from motionprompt.webui import run

    _plain_p, plain = webui.generate({"enabled": False}, AD)
    original_start = run.GuidedRun.__init__

    def patched(self, p, args, cfg, disc, flow):
        boom = _Boom(exc)
        boom.settings = flow.settings  # a flow estimator that fails when called
        original_start(self, p, args, cfg, disc, boom)

    monkeypatch.setattr(run.GuidedRun, "__init__", patched)
    p, res = webui.generate(MP, AD)
    text = p.extra_generation_params["MotionPrompt result"]
    assert text.startswith("not applied") and words in text, text
    assert torch.equal(res.samples, plain.samples)
    assert not webui.errors


def test_interrupt_between_inner_iterations_is_honoured(webui, monkeypatch):
    """Interrupt pressed during the 1st inner iteration of step 3: the loop stops before the 2nd, the
    host ends sampling with its last latent (launch_sampling), and the run still reports and cleans up."""
    from modules import shared

    from motionprompt.guidance import MotionGuide

    iterations = []
    original = MotionGuide._iteration

    def counting(self, step, it, *a):
        iterations.append((step, it))
        if step == 3:
            shared.state.interrupted = True
        return original(self, step, it, *a)

    monkeypatch.setattr(MotionGuide, "_iteration", counting)
    try:
        p, res = webui.generate(MP, AD)
    finally:
        shared.state.interrupted = False
    assert iterations == [(2, 0), (2, 1), (3, 0)]
    assert len(res.images) == 8
    assert p.extra_generation_params["MotionPrompt result"].startswith("2 steps x 2 it")
    from motionprompt.webui import run

    assert not run._RUNS and not webui.errors


def test_output_level_fallback_when_reencoding_differs(webui, monkeypatch):
    """A host whose conditioning we cannot reproduce (prompt editing, a custom encoder) -> output level."""
    sd = webui.sd_model
    monkeypatch.setattr(sd, "get_learned_conditioning", lambda prompts: sd.cond_stage_model(prompts) * 1.1)
    p, _res = webui.generate(MP, AD)
    text = p.extra_generation_params["MotionPrompt result"]
    assert "output-level tokens" in text and text.startswith("4 steps"), text
    p, _res = webui.generate({**MP, "token_level": "input"}, AD)
    assert "input-level tokens impossible" in p.extra_generation_params["MotionPrompt result"]


def test_forge_like_inference_mode_host_is_refused_cleanly(webui):
    """Forge samples under inference_mode: the extension must say so, not crash, and change nothing."""
    _plain_p, plain = webui.generate({"enabled": False}, AD)
    webui.sd_model.forge_objects = object()
    with torch.inference_mode():
        p, res = webui.generate(MP, AD)
    assert "Forge is not supported" in p.extra_generation_params["MotionPrompt result"]
    assert torch.equal(res.samples, plain.samples)


def test_host_cond_tensors_and_caches_are_never_mutated(webui):
    from modules import processing

    webui.generate({"enabled": False}, AD)  # fills the class-level cache for this prompt/batch
    cached = processing.StableDiffusionProcessing.cached_c[1]
    before = cached.batch[0][0].schedules[0].cond.clone()
    p, _ = webui.generate(MP, AD)
    assert p.extra_generation_params["MotionPrompt result"].startswith("4 steps")
    assert processing.StableDiffusionProcessing.cached_c[1] is cached  # reused, not rebuilt ...
    assert torch.equal(cached.batch[0][0].schedules[0].cond, before)  # ... and unchanged


def test_no_gradient_reaching_the_tokens_stops_guidance_with_a_reason(webui, monkeypatch):
    """ControlNet-style: a UNet that reads the text under no_grad gives the tokens no gradient."""
    unet = webui.sd_model.model.diffusion_model
    forward = type(unet).forward

    def detached(self, x, timesteps, context):
        return forward(self, x, timesteps, context.detach() + 0 * context)

    monkeypatch.setattr(type(unet), "forward", detached)
    p, _ = webui.generate(MP, AD)
    text = p.extra_generation_params["MotionPrompt result"]
    assert "no gradient reached the tokens" in text, text


def test_loads_and_explains_without_animatediff(tmp_path):
    ui = WebUI(tmp_path, with_animatediff=False)
    save_disc(tmp_path / "models")
    p, res = ui.generate(MP, None, batch_size=2)
    assert "not applied: sd-webui-animatediff is not installed" in p.extra_generation_params["MotionPrompt result"]
    assert len(res.images) == 2 and not ui.errors


def test_old_webui_without_denoiser_in_callback_params_is_refused(webui, monkeypatch):
    from modules import script_callbacks

    from motionprompt.webui import run

    class OldParams:  # A1111 < 1.8: CFGDenoiserParams has no `denoiser`
        def __init__(self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond):
            pass

    monkeypatch.setattr(script_callbacks, "CFGDenoiserParams", OldParams)
    assert "older than 1.8" in run.host_problem(type("P", (), {"sd_model": webui.sd_model})())
    run.on_cfg_denoiser(OldParams(*[None] * 7))  # a callback without denoiser is ignored, not an error
