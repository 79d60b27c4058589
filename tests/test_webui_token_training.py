"""The tab's motion token (issue 25): the amortized trainer run through the WebUI's own model path on the doubles,
inside a carrier generation; resume and memory paths."""

import pytest
import torch
from safetensors.torch import load_file

from motionprompt.amortized import token_file
from motionprompt.amortized.config import TokenTrainConfig

from .webui_host import WebUI, save_disc

FRAMES, SIZE = 8, 64
PROMPTS = ["a white fox running", "a red car driving left", "waves rolling on a beach", "a bird flying up",
           "a man walking to the right"]


def _job(ui, tmp_path, name="tok", out=None, **kw):
    from motionprompt.hosts.webui.token_job import TokenJob

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    settings = {"steps": 4, "batch": 2, "seeds": 2, "val_seeds": 1, "val_fraction": 0.2, "sampling_steps": 6,
                "cfg_scale": 5.0, "val_every": 2, "save_every": 2, "seed_base": 0, "guidance": {"pairs": 2}, **kw}
    cfg = TokenTrainConfig(disc=str(ui.disc), out=str(out or tmp_path / "tokens" / name), name=name, model="webui",
                           prompts=str(prompts), **settings)
    return TokenJob(cfg, ui.disc, frames=FRAMES, size=SIZE)


def _webui(tmp_path, flavour="a1111"):
    ui = WebUI(tmp_path, flavour=flavour)
    from modules import scripts

    scripts.scripts_txt2img = ui.runner
    ui.disc = save_disc(tmp_path / "models", backend="lk_pyramid", size=32)
    return ui


@pytest.mark.parametrize("flavour", ["a1111", "forge"])
def test_token_trains_through_the_webui_model_path_inside_a_carrier_generation(tmp_path, flavour, monkeypatch):
    ui = _webui(tmp_path, flavour)
    from motionprompt.hosts.webui import token_backend

    calls = []
    real = token_backend.WebUITokenBackend._predictor
    monkeypatch.setattr(token_backend.WebUITokenBackend, "_predictor",
                        lambda self, *a: calls.append(a[1]) or real(self, *a))
    job = _job(ui, tmp_path)
    job.run()
    assert job.error is None, job.error
    assert job.status == "done" and job.step == 4 and len(job.rows) == 4
    assert job.token.exists()
    tok = token_file.load_token(job.token)
    assert tok.meta["data"]["model"]["kind"] == "webui" and tok.meta["training"]["updates"] == 4
    state = load_file(job.token.parent / "state.safetensors")
    assert torch.equal(state["tokens"], tok.vectors) and not torch.equal(state["tokens"], state["tokens0"])  # it learned
    assert job.baseline.get("d_plain") is not None and any(r.get("val_d") is not None for r in job.rows)
    assert calls and max(calls) < 6  # the training's own DDIM steps went through the host's predictor
    assert not ui.errors


def test_interrupted_tab_run_resumes_to_the_uninterrupted_token(tmp_path, one_torch_thread):
    ui = _webui(tmp_path)
    straight = _job(ui, tmp_path, out=tmp_path / "a")
    straight.run()
    assert straight.status == "done", straight.error
    first = _job(ui, tmp_path, out=tmp_path / "b")
    real = first._progress

    def stop_after_two(step, total, row):
        real(step, total, row)
        if step == 2:
            first.stop.set()

    first._progress = stop_after_two
    first.run()
    assert first.status == "stopped" and first.step == 2
    second = _job(ui, tmp_path, out=tmp_path / "b")
    second.run()
    assert second.status == "done" and second.step == 4, second.error
    a = token_file.load_token(tmp_path / "a" / "tok.safetensors").vectors
    b = token_file.load_token(tmp_path / "b" / "tok.safetensors").vectors
    assert torch.equal(a, b)


def test_low_memory_path_trains_the_same_token(tmp_path, one_torch_thread, monkeypatch):
    """Checkpointing the UNet's and the decoder's blocks recomputes what the forward did: same token to float
    rounding (the recompute runs the same kernels on the same inputs)."""
    from motionprompt.amortized.train import TokenTrainer

    ui = _webui(tmp_path)
    blocks = {}
    real = TokenTrainer._blocks
    monkeypatch.setattr(TokenTrainer, "_blocks", lambda self, host: blocks.setdefault(self.cfg.memory, real(self, host)))
    tokens = {}
    for memory in ("speed", "low"):
        job = _job(ui, tmp_path, out=tmp_path / memory, memory=memory, steps=2, val_every=100)
        job.run()
        assert job.status == "done", job.error
        tokens[memory] = token_file.load_token(job.token).vectors
    assert blocks["speed"] == [] and len(blocks["low"]) > 4  # the UNet's blocks (with the motion modules) and the decoder's
    torch.testing.assert_close(tokens["low"], tokens["speed"], atol=1e-5, rtol=1e-5)
