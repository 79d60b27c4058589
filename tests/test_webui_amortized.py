"""The accordion's amortized and hybrid modes, end to end through the WebUI double: an amortized token is
exactly the embedding A1111 loads from the same file, typed at the end of the prompt; it costs no gradient;
the hybrid's inner loop starts from it."""

import pytest
import torch

from motionprompt.amortized.token_file import load_token, save_token

from .webui_double.model import DIM
from .webui_host import WebUI, install_double, save_disc, small_forge_gpu

AD = {"enable": True, "video_length": 8, "batch_size": 8}
NAME = "mp_walk"
AMORTIZED = {"enabled": True, "mode": "amortized", "token": f"{NAME}.safetensors"}
#: the user's prompt: plain, AnimateDiff prompt travel, and travel with weights (A1111 takes the emphasis mean
#: per encoded prompt: batching the keyframe prompts together changes these rows)
PROMPTS = {False: "a white fox running", True: "a fox\n0: running\n4: jumping\nsnow",
           "weighted": "a (fox:1.3)\n0: running\n4: (jumping:1.4)\nsnow"}


@pytest.fixture
def embeddings(tmp_path, monkeypatch):
    install_double()
    from modules import shared

    folder = tmp_path / "embeddings"
    monkeypatch.setattr(shared.cmd_opts, "embeddings_dir", str(folder), raising=False)
    torch.manual_seed(7)
    save_token(folder / f"{NAME}.safetensors", torch.randn(1, DIM), {"init_word": "authentic"})
    return folder


@pytest.fixture
def webui(tmp_path):
    ui = WebUI(tmp_path)
    save_disc(tmp_path / "models")
    return ui


def _typed_embeddings(monkeypatch, webui, folder):
    """A1111's own path: the embeddings folder loaded into the hijack's database, found in typed prompts."""
    from modules import sd_hijack
    from modules.textual_inversion import textual_inversion

    db = textual_inversion.EmbeddingDatabase()
    db.add_embedding_dir(str(folder))
    db.load_textual_inversion_embeddings()  # with shared.sd_model, the WebUI's model
    monkeypatch.setattr(sd_hijack.model_hijack, "embedding_db", db)
    return db


def _spy_unet(monkeypatch, webui):
    calls = []
    unet = webui.sd_model.model.diffusion_model
    original = unet.forward

    def forward(*args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return original(*args, **kwargs)

    monkeypatch.setattr(unet, "forward", forward)
    return calls


def test_webui_embedding_and_our_encoder_give_the_same_conditioning(tmp_path, monkeypatch, webui, embeddings):
    """The exported file loaded as A1111 loads embeddings, its name typed after the prompt, gives exactly the rows
    our token injection (the guidance's input-level encoder) builds with the file's vectors appended."""
    from motionprompt.hosts.webui.tokens import InputLevelEncoder

    db = _typed_embeddings(monkeypatch, webui, embeddings)
    assert list(db.word_embeddings) == [NAME]
    clip = webui.sd_model.cond_stage_model
    token = load_token(embeddings / f"{NAME}.safetensors", width=DIM)
    with torch.no_grad():
        typed = clip([f"a white fox running {NAME}"])
        plain = clip(["a white fox running"])
        ours = InputLevelEncoder(clip, ["a white fox running"], 1).encode(token.vectors)
    torch.testing.assert_close(ours, typed, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(typed, plain, atol=1e-3)


@pytest.mark.parametrize("order", [("animatediff", "motionprompt"), ("motionprompt", "animatediff")])
@pytest.mark.parametrize("travel", [False, True, "weighted"])
@pytest.mark.parametrize("frames", [8, 12])  # one context window; several overlapping ones
def test_amortized_mode_is_the_typed_embedding_at_no_gradient_cost(tmp_path, monkeypatch, embeddings, order, travel,
                                                                  frames):
    """Mode amortized = the same video as typing the token's name at the end of the prompt (with AnimateDiff's
    prompt travel too, whichever callback runs first; over several context windows), without a discriminator, and
    no UNet call with gradients. (A video shorter than the context batch is left out: AnimateDiff's windows then
    mix the rows behind the cut into the uncond half, and the double's values grow to ~1e5, where float noise
    between two runs of the same job already shows.)"""
    from motionprompt.engine.guidance import MotionGuide

    ad = {"enable": True, "video_length": frames, "batch_size": 8}
    webui = WebUI(tmp_path, order=order)
    prompt = PROMPTS[travel]
    typed = f"{prompt} {NAME}"
    monkeypatch.setattr(MotionGuide, "__init__", lambda *a, **k: pytest.fail("no guide in the amortized mode"))
    calls = _spy_unet(monkeypatch, webui)
    p, amortized = webui.generate(AMORTIZED, ad, prompt=prompt)
    assert not webui.errors, webui.errors
    assert calls and not any(calls)  # every UNet call without gradients: no inner loop
    text = p.extra_generation_params["MotionPrompt result"]
    assert text.startswith(f"amortized token {NAME} (1 vector(s))") and "no inner loop" in text, text
    assert "mode: amortized" in p.extra_generation_params["MotionPrompt"]
    _p, plain = webui.generate({"enabled": False}, ad, prompt=prompt)
    _typed_embeddings(monkeypatch, webui, embeddings)
    _p, by_name = webui.generate({"enabled": False}, ad, prompt=typed)
    assert not torch.allclose(amortized.samples, plain.samples, atol=1e-4)
    assert torch.equal(amortized.samples, by_name.samples)  # same rows, same batches: exact by construction


def test_hybrid_mode_starts_the_inner_loop_from_the_token_file(monkeypatch, webui, embeddings):
    from motionprompt.engine.guidance import MotionGuide

    starts = []
    original = MotionGuide._optimize

    def spy(self, step, total, predict):
        starts.append((self.tokens0.clone(), self.started, self.cfg.inner_iters, self.cfg.start_token))
        return original(self, step, total, predict)

    monkeypatch.setattr(MotionGuide, "_optimize", spy)
    p, _ = webui.generate({**AMORTIZED, "mode": "hybrid", "discriminator": "disc.safetensors", "inner_iters": 1,
                           "window_start": 0.25, "window_end": 0.75}, AD)
    assert not webui.errors, webui.errors
    assert p.extra_generation_params["MotionPrompt result"].startswith("4 steps x 1 it")
    token = load_token(embeddings / f"{NAME}.safetensors").vectors
    assert len(starts) == 4 and all(torch.equal(t0, token) and started and k == 1 for t0, started, k, _ in starts)
    assert starts[0][3] == str(embeddings / f"{NAME}.safetensors")
    assert "token_level: input" in p.extra_generation_params["MotionPrompt"]  # no output-level fallback for a file


@pytest.mark.parametrize("order", [("animatediff", "motionprompt"), ("motionprompt", "animatediff")])
@pytest.mark.parametrize("travel", [False, True, "weighted"])
@pytest.mark.parametrize("frames", [8, 12])
def test_hybrid_without_inner_iterations_is_the_amortized_video_from_the_first_step(tmp_path, embeddings, order, travel,
                                                                                   frames):
    """The token is part of the prompt from step 0 on in both modes: the hybrid's step 0 (pure noise, where
    AnimateDiff builds its conditioning, before or after our callback) must not fall back to the plain prompt;
    over several context windows too."""
    ad = {"enable": True, "video_length": frames, "batch_size": 8}
    webui = WebUI(tmp_path, order=order)
    save_disc(tmp_path / "models")
    prompt = PROMPTS[travel]
    _p, amortized = webui.generate(AMORTIZED, ad, prompt=prompt)
    p, hybrid = webui.generate({**AMORTIZED, "mode": "hybrid", "discriminator": "disc.safetensors", "inner_iters": 0,
                                "window_start": 0.25, "window_end": 0.75}, ad, prompt=prompt)
    assert not webui.errors, webui.errors
    assert p.extra_generation_params["MotionPrompt result"].startswith("start token as it is on every step")
    assert torch.equal(hybrid.samples, amortized.samples)


def test_amortized_mode_reports_why_not_and_sampling_continues(tmp_path, monkeypatch, webui, embeddings):
    save_token(embeddings / "wide.safetensors", torch.randn(1, DIM + 4))
    _p, plain = webui.generate({"enabled": False}, AD)
    for args, words in [({**AMORTIZED, "token": "wide.safetensors"}, f"{DIM + 4} wide"),
                        ({**AMORTIZED, "token": ""}, "no token selected"),
                        ({**AMORTIZED, "token": "missing.safetensors"}, "file not found")]:
        p, res = webui.generate(args, AD)
        assert words in p.extra_generation_params["MotionPrompt result"], p.extra_generation_params
        assert torch.equal(res.samples, plain.samples)
    p, _ = webui.generate({**AMORTIZED, "token_level": "output"}, AD)
    assert "needs input-level tokens" in p.extra_generation_params["MotionPrompt result"]
    assert "MotionPrompt metrics" not in p.extra_generation_params
    p, _ = webui.generate({**AMORTIZED, "discriminator": "disc.safetensors"}, AD)  # measured like a guided clip
    metrics = p.extra_generation_params["MotionPrompt metrics"]
    assert "warp error" in metrics and "D 0." in metrics


def test_mode_and_token_travel_through_api_infotext_and_xyz(monkeypatch, webui, embeddings):
    from modules import processing, script_callbacks, scripts

    from motionprompt.hosts.webui import token_ui
    from motionprompt.hosts.webui.args import MotionPromptArgs

    args = MotionPromptArgs.from_dict({**AMORTIZED, "mode": "per_sample"})
    assert args.mode == "per-sample"
    args = MotionPromptArgs.from_dict(AMORTIZED)
    back = MotionPromptArgs.from_dict({**MotionPromptArgs.paste_values(args.to_infotext()), "enabled": True})
    assert back == args and (back.mode, back.token) == ("amortized", f"{NAME}.safetensors")
    assert MotionPromptArgs.paste_values("preset: fast")["mode"] == "per-sample"  # an older infotext: per-sample
    with pytest.raises(ValueError, match="unknown MotionPrompt mode"):
        MotionPromptArgs.from_dict({"mode": "cheap"})
    assert token_ui.list_tokens() == [f"{NAME}.safetensors"]
    xyz = _fake_xyz_module()
    scripts.scripts_data.append(scripts.ScriptClassData(type("XYZ", (), {"__module__": "xyz_grid.py"}), "", "", xyz))
    script_callbacks.before_ui_callback()
    script_callbacks.before_ui_callback()  # UI reload: no duplicates
    labels = [o.label for o in xyz.axis_options]
    assert labels.count("[MotionPrompt] Mode") == 1 and "[MotionPrompt] Token" in labels
    mode_axis = next(o for o in xyz.axis_options if o.label == "[MotionPrompt] Mode")
    assert mode_axis.choices() == ["per-sample", "amortized", "hybrid"]

    class Cell(processing.StableDiffusionProcessingTxt2Img):
        pass

    cell = Cell(sd_model=webui.sd_model, scripts=webui.runner, script_args=_script_args(webui, {"enabled": True}),
                prompt="a fox", steps=8, outpath_samples=str(webui.outputs))
    mode_axis.apply(cell, "amortized", None)
    next(o for o in xyz.axis_options if o.label == "[MotionPrompt] Token").apply(cell, f"{NAME}.safetensors", None)
    processing.process_images(cell)
    assert cell.extra_generation_params["MotionPrompt result"].startswith(f"amortized token {NAME}")


def _script_args(webui, mp_args):
    args = webui.ui_defaults()
    args[webui.mp.args_from] = mp_args
    ad_script = next(s for s in webui.runner.alwayson_scripts if s.title() == "AnimateDiff")
    args[ad_script.args_from] = dict(AD)
    return args


def _fake_xyz_module():
    import types

    class AxisOption:
        def __init__(self, label, type, apply, format_value=None, confirm=None, cost=0.0, choices=None):
            self.label, self.type, self.apply, self.choices = label, type, apply, choices

    return types.SimpleNamespace(axis_options=[], AxisOption=AxisOption,
                                 boolean_choice=lambda reverse=False: lambda: ["True", "False"])


# ---------------------------------------------------------------------------------------------- Forge
@pytest.fixture
def forge_embeddings(tmp_path):
    """The Forge double (early-2024 Forge + AnimateDiff forge/master) and the token file in its embeddings folder;
    the A1111 double back afterwards."""

    def make(order=("animatediff", "motionprompt")):
        ui = WebUI(tmp_path / "-".join(order), order=order, flavour="forge")
        from modules import shared

        folder = tmp_path / "embeddings"
        if not folder.is_dir():
            torch.manual_seed(7)
            save_token(folder / f"{NAME}.safetensors", torch.randn(1, DIM), {"init_word": "authentic"})
        shared.cmd_opts.embeddings_dir = str(folder)
        return ui, folder

    yield make
    install_double("a1111")


@pytest.mark.parametrize("order", [("animatediff", "motionprompt"), ("motionprompt", "animatediff")])
@pytest.mark.parametrize("travel", [False, True, "weighted"])
@pytest.mark.parametrize("frames", [8, 12])  # one context window; several (Forge needs frames >= context)
def test_amortized_mode_on_forge_is_the_typed_embedding(monkeypatch, forge_embeddings, order, travel, frames):
    """Early-2024 Forge: mode amortized gives the video of the token's name typed at the end of the prompt (Forge's
    CLIP wrapper reads the same embedding database), with prompt travel, in either callback order, over one or
    several context windows; no UNet call with gradients."""
    ui, folder = forge_embeddings(order)
    forge_ad = {"enable": True, "video_length": frames, "batch_size": 8}
    prompt = PROMPTS[travel]
    typed = f"{prompt} {NAME}"
    calls = _spy_unet(monkeypatch, ui)
    p, amortized = ui.generate(AMORTIZED, forge_ad, prompt=prompt)
    assert not ui.errors, ui.errors
    text = p.extra_generation_params["MotionPrompt result"]
    assert text.startswith(f"amortized token {NAME} (1 vector(s))"), text
    assert calls and not any(calls)
    _p, plain = ui.generate({"enabled": False}, forge_ad, prompt=prompt)
    _typed_embeddings(monkeypatch, ui, folder)
    _p, by_name = ui.generate({"enabled": False}, forge_ad, prompt=typed)
    assert not torch.allclose(amortized.samples, plain.samples, atol=1e-4)
    assert torch.equal(amortized.samples, by_name.samples)  # same rows, same batches: exact by construction


def test_amortized_mode_on_a_small_forge_gpu_loads_clip_then_the_sampling_models(monkeypatch, forge_embeddings):
    """A simulated device too small for the UNet and the CLIP together (``webui_host.small_forge_gpu``): encoding
    the token at the first step evicts sampling weights, which are loaded again before the UNet runs; the video
    is still the typed name's, and plain jobs before and after are bit-identical."""
    ui, folder = forge_embeddings()
    small_forge_gpu(ui)
    forge_ad = {"enable": True, "video_length": 8, "batch_size": 8}
    _p, before = ui.generate({"enabled": False}, forge_ad)
    p, amortized = ui.generate(AMORTIZED, forge_ad)
    assert not ui.errors, ui.errors
    assert p.extra_generation_params["MotionPrompt result"].startswith(f"amortized token {NAME}"), p.extra_generation_params
    _p, after = ui.generate({"enabled": False}, forge_ad)
    assert torch.equal(before.samples, after.samples)
    assert not torch.allclose(amortized.samples, before.samples, atol=1e-4)
    _typed_embeddings(monkeypatch, ui, folder)
    _p, by_name = ui.generate({"enabled": False}, forge_ad, prompt=f"a white fox running {NAME}")
    torch.testing.assert_close(amortized.samples, by_name.samples, atol=1e-5, rtol=1e-5)
