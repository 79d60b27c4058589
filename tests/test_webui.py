"""The real extension (scripts/ entry, UI, hooks, callback) driven end to end through the WebUI double."""

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
