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


def test_api_dict_and_ui_positional_args_give_the_same_run(webui):
    from motionprompt.hosts.webui.args import MotionPromptArgs

    positional = webui.ui_defaults()[webui.mp.args_from:webui.mp.args_to]
    names = MotionPromptArgs.field_names()
    values = dict(zip(names, positional, strict=True))
    values.update(enabled=True, discriminator="disc.safetensors", inner_iters=2, window_start=0.25, window_end=0.75)
    p_ui, res_ui = webui.generate([values[n] for n in names], AD)
    p_api, res_api = webui.generate(MP, AD)
    assert torch.allclose(res_ui.samples, res_api.samples, atol=1e-6)
    assert p_ui.extra_generation_params["MotionPrompt"] == p_api.extra_generation_params["MotionPrompt"]


def _pasted_values(webui, infotext: str) -> list:
    """What the UI's controls hold after "Read generation parameters" on ``infotext`` (from the UI defaults)."""
    from modules import infotext_utils

    fields = webui.mp.infotext_fields
    updates = infotext_utils.paste(fields, {"MotionPrompt": infotext, "Steps": "8"}, infotext)
    current = dict(zip(webui.runner.inputs[webui.mp.args_from:webui.mp.args_to],
                       webui.ui_defaults()[webui.mp.args_from:webui.mp.args_to], strict=True))
    by_comp = {id(comp): update for (comp, _key), update in zip(fields, updates, strict=True)}
    comps = webui.runner.inputs[webui.mp.args_from:webui.mp.args_to]
    return [by_comp[id(c)].get("value", current[c]) if id(c) in by_comp else current[c] for c in comps]


def test_pasted_infotext_sets_every_control_and_reproduces_the_run(webui):
    """Paste = the preset's values + the listed ones: no control keeps a stale (paper) value that would then
    override the pasted preset."""
    from motionprompt.hosts.webui.args import MotionPromptArgs

    args = MotionPromptArgs.from_dict({"enabled": True, "discriminator": "disc.safetensors", "preset": "fast",
                                       "lambda_tv": 0.25, "pairs": 2, "flow_backend": "lk_pyramid"})
    values = _pasted_values(webui, args.to_infotext())
    back = MotionPromptArgs.from_script_args(values)
    assert back == args
    cfg = back.engine_config(0, None)[0]
    assert (cfg.inner_iters, cfg.every_k, cfg.lambda_tv, cfg.pairs) == (1, 2, 0.25, 2)  # fast's K, not paper's 3


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

    from motionprompt.hosts.webui import run as runs

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
    if isinstance(mp_args, dict):
        args[webui.mp.args_from] = mp_args
    else:
        args[webui.mp.args_from:webui.mp.args_from + len(mp_args)] = mp_args
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


@pytest.mark.parametrize(("sampler", "calls"), [("DDIM", [2, 3, 4, 5]), ("Heun", [4, 6, 8, 10])])
def test_timestep_and_second_order_samplers(webui, monkeypatch, sampler, calls):
    """DDIM: eps -> x0 through get_pred_x0; Heun: A1111 counts total_steps = 2 * steps
    (sd_samplers_common.SamplerData.total_steps) and each step is optimized once, at its first UNet call."""
    from motionprompt.engine.guidance import MotionGuide
    from motionprompt.hosts.webui import run

    seen = []
    original = MotionGuide._optimize

    def spy(self, step, total, predict):
        seen.append((step, total, run._RUNS[0]._denoiser.step))
        return original(self, step, total, predict)

    monkeypatch.setattr(MotionGuide, "_optimize", spy)
    p, _ = webui.generate(MP, AD, sampler_name=sampler)
    assert not webui.errors, webui.errors
    assert p.extra_generation_params["MotionPrompt result"].startswith("4 steps x 2 it")
    assert seen == [(s, 8, c) for s, c in zip([2, 3, 4, 5], calls, strict=True)]


@pytest.mark.parametrize("sampler", ["Euler", "DDIM"])
@pytest.mark.parametrize("batched", [True, False])
def test_predicted_x0_is_the_hosts_own_x0(webui, sampler, batched):
    """The predictor against what the host itself computes at the same call: cond rows' x0 (k-diffusion:
    the inner model's output, DDIM: eps -> x0) and the CFG-combined result, with the host's "Batch
    cond/uncond" on and off (off: AnimateDiff's hooked forward only computes the first half of a batch, so
    a one-call predictor would see zero uncond rows and return 7·x0)."""
    from modules import script_callbacks, shared

    from motionprompt.hosts.webui.host import predictor

    shared.opts.batch_cond_uncond = batched
    mine, host = {}, {}

    def ours(params):  # registered after AnimateDiff: its hooked forward and text_cond are in place
        den = params.denoiser
        if den.step == 2:
            with torch.no_grad():
                mine["cond"] = predictor(params, 7.0, "cond", batch_cond_uncond=batched)(params.text_cond)
                mine["cfg"] = predictor(params, 7.0, "cfg", batch_cond_uncond=batched)(params.text_cond)
            mine["x"], mine["sigma"], mine["den"] = params.x, params.sigma, den

    def denoised(params):
        if "x" in mine and "x_out" not in host:
            host["x_out"] = params.x.clone()

    def after(params):
        if "x_out" in host and "after" not in host:
            host["after"] = params.x.clone()

    script_callbacks.on_cfg_denoiser(ours)
    script_callbacks.on_cfg_denoised(denoised)
    script_callbacks.on_cfg_after_cfg(after)
    webui.generate({"enabled": False}, AD, sampler_name=sampler)
    assert not webui.errors, webui.errors
    den, b = mine["den"], AD["video_length"]
    x, sigma = mine["x"], mine["sigma"]
    cond_x0 = den.get_pred_x0(x[:b], host["x_out"][:b], sigma[:b])
    assert torch.allclose(mine["cond"], cond_x0, atol=1e-5)
    cfg_x0 = den.get_pred_x0(x[:b], host["after"], sigma[:b])  # x0 is affine in eps: CFG commutes with it
    assert torch.allclose(mine["cfg"], cfg_x0, atol=1e-4)


def test_batch_cond_uncond_off_guides_on_the_real_cfg_x0(webui, monkeypatch):
    """End to end with "Batch cond/uncond" off and x0_mode=cfg: at the first guided step the x0 the guide
    optimizes (with the cond it returns) is exactly the host's CFG result for that step."""
    from modules import script_callbacks, shared

    from motionprompt.engine.guidance import MotionGuide

    shared.opts.batch_cond_uncond = False
    ours, host = {}, {}
    original = MotionGuide.conditioning

    def spy(self, step, total, predict):
        cond = original(self, step, total, predict)
        if step == 2:
            with torch.no_grad():
                ours["x0"] = predict(cond)
        return cond

    def after(params):
        if "x0" in ours and "after" not in host:
            host["after"] = params.x.clone()

    monkeypatch.setattr(MotionGuide, "conditioning", spy)
    script_callbacks.on_cfg_after_cfg(after)
    p, _ = webui.generate({**MP, "x0_mode": "cfg"}, AD)
    assert p.extra_generation_params["MotionPrompt result"].startswith("4 steps x 2 it"), p.extra_generation_params
    assert torch.allclose(ours["x0"], host["after"], atol=1e-4)  # Euler: denoised = CFG x0


def test_short_video_scores_and_reports_only_the_frames_the_user_gets(webui):
    """video_length 8 < context 16: AnimateDiff samples 16 rows and keeps 8; rows 8-15 are not the video."""
    import json

    p, res = webui.generate({**MP, "pairs": 4, "gap_max": 6}, {"enable": True, "video_length": 8})
    assert not webui.errors, webui.errors
    assert p.batch_size == 16 and len(res.images) == 8  # what AnimateDiff's output keeps
    report = next(c for c in p.comments if "report" in c).rsplit("report ", 1)[1]
    data = json.loads(Path(report).with_suffix(".json").read_text(encoding="utf-8"))
    pairs = [pair for step in data["steps"] for it in step["iterations"] for pair in it["pairs"]]
    assert len(pairs) == 4 * 2 * 4 and max(max(pair) for pair in pairs) <= 7
    assert data["metrics"]["frames"] == 8


def _window_log(tmp_path, order, ad_args, monkeypatch):
    """Runs one guided job; returns the samples and (denoiser step, ad_params.step) of every hooked forward."""
    from .webui_host import WebUI

    ui = WebUI(tmp_path, order=order)
    from modules import script_callbacks

    save_disc(tmp_path / "models")
    current, log = [], []
    windows = ui.ad.AnimateDiffInfV2V.uniform

    def record(step, *args):
        log.append((current[-1], step))
        return windows(step, *args)

    first = script_callbacks.ScriptCallback("spy", lambda params: current.append(params.denoiser.step), "spy")
    script_callbacks.callback_map["callbacks_cfg_denoiser"].insert(0, first)
    with monkeypatch.context() as m:
        m.setattr(ui.ad.AnimateDiffInfV2V, "uniform", staticmethod(record))
        _p, res = ui.generate(MP, ad_args)
    assert not ui.errors, ui.errors
    return res.samples, log


def test_callback_order_does_not_change_the_windows_or_the_result(tmp_path, monkeypatch):
    """12 frames, context 8: two context windows whose layout depends on ad_params.step. Whichever callback
    runs first, every UNet call of step n (ours included) uses step n's windows, and the videos agree."""
    ad_args = {"enable": True, "video_length": 12, "batch_size": 8}
    samples_a, log_a = _window_log(tmp_path / "a", ("animatediff", "motionprompt"), ad_args, monkeypatch)
    samples_b, log_b = _window_log(tmp_path / "b", ("motionprompt", "animatediff"), ad_args, monkeypatch)
    for log in (log_a, log_b):
        assert len(log) > 8  # guided steps add our own forwards to the host's 8
        assert all(den_step == ad_step for den_step, ad_step in log if den_step > 0), [x for x in log if x[0] != x[1]]
    assert torch.allclose(samples_a, samples_b, atol=1e-5)


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


@pytest.mark.parametrize(("exc", "memory", "words"), [
    # a simulated CUDA out-of-memory on every path: auto goes one path lower per guided step (each step unguided),
    # then stops after the low path; a path asked for stops at once
    (torch.cuda.OutOfMemoryError("CUDA out of memory"), "auto", "out of memory at step 4 on the low memory path"),
    (torch.cuda.OutOfMemoryError("CUDA out of memory"), "speed", "out of memory at step 2 on the speed memory path"),
    (RuntimeError("boom"), "auto", "RuntimeError at step 2: boom"),
])
def test_failure_mid_sampling_restores_animatediff_conditioning(webui, monkeypatch, exc, memory, words):
    from motionprompt.hosts.webui import run

    _plain_p, plain = webui.generate({"enabled": False}, AD)
    original_start = run.GuidedRun.__init__

    def patched(self, p, args, cfg, disc, flow):
        boom = _Boom(exc)
        boom.settings = flow.settings  # a flow estimator that fails when called
        original_start(self, p, args, cfg, disc, boom)

    monkeypatch.setattr(run.GuidedRun, "__init__", patched)
    p, res = webui.generate({**MP, "memory": memory}, AD)
    text = p.extra_generation_params["MotionPrompt result"]
    assert text.startswith("not applied") and words in text, text
    assert torch.equal(res.samples, plain.samples)
    assert not webui.errors


def test_interrupt_between_inner_iterations_is_honoured(webui, monkeypatch):
    """Interrupt pressed during the 1st inner iteration of step 3: the loop stops before the 2nd, the
    host ends sampling with its last latent (launch_sampling), and the run still reports and cleans up."""
    from modules import shared

    from motionprompt.engine.guidance import MotionGuide

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
    from motionprompt.hosts.webui import run

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

    from motionprompt.hosts.webui import run

    class OldParams:  # A1111 < 1.8: CFGDenoiserParams has no `denoiser`
        def __init__(self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond):
            pass

    monkeypatch.setattr(script_callbacks, "CFGDenoiserParams", OldParams)
    assert "older than 1.8" in run.host_problem(type("P", (), {"sd_model": webui.sd_model})())
    run.on_cfg_denoiser(OldParams(*[None] * 7))  # a callback without denoiser is ignored, not an error


def _cell(webui, overrides: dict, mp_args):
    """One XYZ cell: the axis apply functions wrote ``overrides`` onto p (a subclass stands in for the copy)."""
    from modules import processing

    class Cell(processing.StableDiffusionProcessingTxt2Img):
        motionprompt_xyz = dict(overrides)  # noqa: RUF012

    return _generate_with_class(webui, Cell, mp_args)[0]


def test_xyz_preset_axis_moves_the_values_that_followed_the_ui_preset(webui):
    """The UI sends every advanced value; those equal to its preset's follow an XYZ Preset axis, a value the
    user changed stays an override in every cell. The API dict is read by the same rule."""
    from motionprompt.hosts.webui.args import MotionPromptArgs

    names = MotionPromptArgs.field_names()
    ui = dict(zip(names, webui.ui_defaults()[webui.mp.args_from:webui.mp.args_to], strict=True))
    ui.update(enabled=True, discriminator="disc.safetensors")  # preset "paper": K=3, every step, steps 2-4 of 8
    paper = _cell(webui, {"preset": "paper"}, [ui[n] for n in names])
    fast = _cell(webui, {"preset": "fast"}, [ui[n] for n in names])
    mine = _cell(webui, {"preset": "fast"}, [{**ui, "inner_iters": 2}[n] for n in names])
    assert paper.extra_generation_params["MotionPrompt result"].startswith("3 steps x 3 it")
    assert fast.extra_generation_params["MotionPrompt result"].startswith("2 steps x 1 it")  # fast: every 2nd, K=1
    assert mine.extra_generation_params["MotionPrompt result"].startswith("2 steps x 2 it")
    assert MotionPromptArgs.from_dict({"preset": "fast", "inner_iters": 1}) == MotionPromptArgs.from_dict({"preset": "fast"})
    assert fast.extra_generation_params["MotionPrompt"] == "discriminator: disc.safetensors, preset: fast"


def test_flow_settings_come_from_the_discriminator_and_a_requested_mismatch_is_reported(webui):
    """D trained on lk_pyramid 32 px / 2 iterations. The fast preset's own flow (128 px, 6) must not apply;
    an explicit size runs with a note; another backend is refused. CLI and bench follow the same rule."""
    import argparse
    import json

    def settings(p):
        report = next(c for c in p.comments if "report" in c).rsplit("report ", 1)[1]
        return json.loads(Path(report).with_suffix(".json").read_text(encoding="utf-8"))["settings"]["flow"]

    p, _ = webui.generate({**MP, "preset": "fast"}, AD)
    assert settings(p) == {"backend": "lk_pyramid", "size": 32, "iters": 2}
    assert "requested" not in p.extra_generation_params["MotionPrompt result"]
    p, _ = webui.generate({**MP, "flow_size": 64}, AD)
    assert settings(p) == {"backend": "lk_pyramid", "size": 64, "iters": 2}
    assert "flow size 64 requested; discriminator trained at 32" in p.extra_generation_params["MotionPrompt result"]
    p, _ = webui.generate({**MP, "flow_backend": "raft_small"}, AD)
    assert "not applied" in p.extra_generation_params["MotionPrompt result"]
    assert "trained on 'lk_pyramid' flow" in p.extra_generation_params["MotionPrompt result"]

    from motionprompt.cli.main import _disc_flow
    from motionprompt.engine.config import preset
    from motionprompt.evaluation.bench import BenchSettings, guidance_config
    from motionprompt.flow.settings import FlowSettings

    d = FlowSettings("lk_pyramid", 32, 2)
    assert guidance_config("fast", BenchSettings(), d).flow == d
    cli_args = argparse.Namespace(flow_backend=None, flow_size=None, flow_iters=None)
    cfg, notes = preset("fast"), []
    _disc_flow(cfg, cli_args, d, notes)
    assert cfg.flow == d and notes == []


@pytest.mark.parametrize(("extra", "message"), [
    ({"unet_autocast": "fp16"}, "the WebUI samples in its own precision"),
    ({"grad_checkpointing": True}, "replaced by 'memory'"),
    ({"memory": "tiny"}, "memory must be one of"),
])
def test_controls_that_would_do_nothing_are_not_offered_and_refused_by_api(webui, extra, message):
    labels = [getattr(c, "label", "") for c in webui.runner.inputs[webui.mp.args_from:webui.mp.args_to]]
    assert not any("autocast" in str(label).lower() for label in labels)
    inputs = webui.runner.inputs[webui.mp.args_from:webui.mp.args_to]
    preset = next(c for c in inputs if c.label == "Preset")  # low_vram is offered again: its memory path is real
    assert [c[0] if isinstance(c, tuple) else c for c in preset.choices] == ["paper", "fast", "low_vram"]
    memory = next(c for c in inputs if c.label == "Memory")
    assert [c[0] if isinstance(c, tuple) else c for c in memory.choices] == ["auto", "speed", "balanced", "low"]
    p, res = webui.generate({**MP, **extra}, AD)
    text = p.extra_generation_params["MotionPrompt result"]
    assert text.startswith("not applied") and message in text, text
    assert len(res.images) == 8 and not webui.errors


def test_discriminator_list_default_and_paste(webui, tmp_path):
    """Only discriminators are listed; the default is the one last used (kept across restarts); pasting an
    infotext naming a file added after start-up selects it."""
    import os

    from modules import infotext_utils

    from motionprompt.files.atomic import save_safetensors
    from motionprompt.hosts.webui import paths

    root = tmp_path / "models" / "MotionPrompt"
    save_disc(tmp_path / "models", name="a_first.safetensors")
    save_safetensors({"w": torch.zeros(1)}, {"format": "motionprompt.trainer_state"}, root / "disc.resume.safetensors")
    save_safetensors({"w": torch.zeros(1)}, {"format": "pt"}, root / "lora.safetensors")
    os.utime(root / "a_first.safetensors", (1, 1))
    assert paths.list_discriminators() == ["a_first.safetensors", "disc.safetensors"]

    def default():
        return webui.ui_defaults()[webui.mp.args_from + 1]

    assert default() == "disc.safetensors"  # never used yet: the newest file
    webui.generate({**MP, "discriminator": "a_first.safetensors"}, AD)
    assert default() == "a_first.safetensors"
    restarted = WebUI(tmp_path / "restart")
    restarted_models = tmp_path / "restart" / "models"
    for name in ("a_first.safetensors", "disc.safetensors"):
        save_disc(restarted_models, name=name)
    os.utime(restarted_models / "MotionPrompt" / "a_first.safetensors", (1, 1))
    from modules import shared

    shared.opts.data.update(__import__("json").loads(Path(webui.config).read_text()))  # config.json read at start
    assert restarted.ui_defaults()[restarted.mp.args_from + 1] == "a_first.safetensors"

    save_disc(restarted_models, name="later.safetensors")  # trained after the UI was built
    fields = restarted.mp.infotext_fields
    params = {"MotionPrompt": "discriminator: later.safetensors, preset: paper"}
    updates = infotext_utils.paste(fields, params, "")
    disc_update = next(u for (c, _k), u in zip(fields, updates, strict=True) if c.elem_id.endswith("_discriminator"))
    assert disc_update["value"] == "later.safetensors" and "later.safetensors" in disc_update["choices"]


def test_result_line_measures_the_change_on_the_same_pairs(webui):
    """One inner iteration: first and last iteration are the same number, so the line reports D on the same
    frame pairs before and after each step instead. The report has a peak-RSS figure on CPU and labelled axes."""
    import json
    import re
    import resource

    p, _ = webui.generate({**MP, "inner_iters": 1, "lr": 0.5}, AD)
    text = p.extra_generation_params["MotionPrompt result"]
    assert "D(real) on the same frame pairs before->after each step" in text, text
    report = next(c for c in p.comments if "report" in c).rsplit("report ", 1)[1]
    data = json.loads(Path(report).with_suffix(".json").read_text(encoding="utf-8"))
    summary = data["summary"]
    firsts = [s["iterations"][0]["d_score"] for s in data["steps"] if s["iterations"]]
    assert summary["d_same_pairs_before"] == pytest.approx(sum(firsts) / len(firsts))
    assert summary["d_same_pairs_after"] != pytest.approx(summary["d_same_pairs_before"], abs=1e-7)
    printed = re.search(r"each step ([\d.]+)->([\d.]+) \(([-+][\d.e-]+); higher after (\d+) of (\d+) steps?\)", text)
    assert printed, text  # as many decimals as the change needs (issue 26: "0.109->0.109 (+0.0000)")
    half = 0.51 * 10 ** -len(printed[1].split(".")[1])
    assert float(printed[1]) == pytest.approx(summary["d_same_pairs_before"], abs=half)
    assert float(printed[2]) == pytest.approx(summary["d_same_pairs_after"], abs=half)
    assert float(printed[3]) == pytest.approx(summary["d_same_pairs_after"] - summary["d_same_pairs_before"], rel=0.05)
    assert 0 <= int(printed[4]) <= int(printed[5]) == summary["steps_guided"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert 0 < summary["peak_rss_bytes"] <= peak and 0 <= summary["peak_rss_growth_bytes"] <= summary["peak_rss_bytes"]
    page = Path(report).read_text(encoding="utf-8")
    assert "x: inner iteration" in page and "y: discriminator loss" in page


def test_output_level_tokens_start_from_the_init_word(webui, monkeypatch):
    from motionprompt.engine.guidance import MotionGuide

    sd = webui.sd_model
    monkeypatch.setattr(sd, "get_learned_conditioning", lambda prompts: sd.cond_stage_model(prompts) * 1.1)
    inits = {}
    original = MotionGuide.__init__

    def spy(self, cfg, *a, **k):
        original(self, cfg, *a, **k)
        inits[cfg.init_word] = self.tokens0.clone()

    monkeypatch.setattr(MotionGuide, "__init__", spy)
    for word in ("authentic", "smooth"):
        p, _ = webui.generate({**MP, "init_word": word}, AD)
        assert "output-level tokens" in p.extra_generation_params["MotionPrompt result"]
    assert not torch.allclose(inits["authentic"], inits["smooth"])
    clip = sd.cond_stage_model
    _chunks, count = clip.tokenize_line("a white fox running")
    with torch.no_grad():
        expected = clip(["a white fox running smooth"])[0, count + 1]
    assert torch.allclose(inits["smooth"][0], expected.float(), atol=1e-6)
