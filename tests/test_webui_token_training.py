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
    sampled, real_sampled = [], job._sampled
    job._sampled = lambda done, total: sampled.append((done, total)) or real_sampled(done, total)
    job.run()
    assert job.error is None, job.error
    assert sampled[:2] == [(1, 8), (2, 8)] and (8, 8) in sampled  # the tab shows the latent sampling clip by clip
    assert job.status == "done" and job.step == 4 and len(job.rows) == 4
    assert job.token.exists()
    tok = token_file.load_token(job.token)
    assert tok.meta["data"]["model"]["kind"] == "webui" and tok.meta["training"]["updates"] == 4
    state = load_file(job.token.parent / "state.safetensors")
    assert torch.equal(state["tokens"], tok.vectors) and not torch.equal(state["tokens"], state["tokens0"])  # it learned
    assert job.baseline.get("d_plain") is not None and any(r.get("val_d") is not None for r in job.rows)
    assert calls and max(calls) < 6  # the training's own DDIM steps went through the host's predictor
    assert any(m.startswith("latent cache: 8 clips") for m in job.messages)  # 4 training prompts x 2 seeds
    assert not ui.errors
    assert not [f for f in tmp_path.rglob("*") if f.suffix in (".gif", ".png", ".mp4")]  # the carrier left no video


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


# ------------------------------------------------------------------ the WebUI path against the reference host
class _Same:
    """What the reference host calls on a diffusers component and an adapter need not do (the double's modules
    stay as the WebUI has them)."""

    def to(self, *_a, **_k):
        return self

    def requires_grad_(self, *_a):
        return self


class _UNet(_Same):
    """The double's UNet (with AnimateDiff's injected motion module) called as a diffusers UNetMotionModel:
    [B, C, F, h, w] latents, one text row per frame, eps out."""

    def __init__(self, sd_model):
        from types import SimpleNamespace

        self.sd_model, self.config, self.dtype = sd_model, SimpleNamespace(in_channels=4), torch.float32

    def __call__(self, latents, t, encoder_hidden_states):
        from types import SimpleNamespace

        b, c, f, h, w = latents.shape
        rows = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        eps = self.sd_model.apply_model(rows, torch.full((b * f,), float(t)), {"c_crossattn": [encoder_hidden_states]})
        return SimpleNamespace(sample=eps.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4))


class _VAE(_Same):
    def __init__(self, sd_model):
        from types import SimpleNamespace

        self.first_stage_model, self.dtype = sd_model.first_stage_model, torch.float32
        self.config = SimpleNamespace(scaling_factor=sd_model.scale_factor, shift_factor=None,
                                      block_out_channels=[1, 1, 1, 1])

    def decode(self, z):
        from types import SimpleNamespace

        return SimpleNamespace(sample=self.first_stage_model.decode(z))


class _TextEncoder(_Same):
    """The double's CLIP transformer as transformers' CLIPTextModel: ``get_input_embeddings`` is the module A1111's
    textual inversion splices into (EmbeddingsWithFixes; ``weight`` its table)."""

    def __init__(self, sd_model):
        self.transformer = sd_model.cond_stage_model.wrapped.transformer
        self.embedding = self.transformer.text_model.embeddings.token_embedding
        self.embedding.weight = self.embedding.wrapped.weight

    def get_input_embeddings(self):
        return self.embedding

    def __call__(self, ids):
        return (self.transformer(input_ids=ids).last_hidden_state,)


class _Tokenizer:
    def __init__(self, tok):
        self.tok, self.bos, self.eos, self.pad, self.max_length = tok, tok.bos, tok.eos, tok.eos, 77

    def ids(self, text):
        return self.tok.ids(text)


@pytest.mark.diffusers
def test_webui_path_token_equals_the_reference_hosts(tmp_path, one_torch_thread):
    """Same prompts, seeds, batches and settings: the token the tab trains through the WebUI's model path (A1111's
    encoder and k-diffusion denoiser, AnimateDiff's windows, Euler-as-DDIM in sigma space) equals the one
    ``token-train``'s trainer makes through the reference host (diffusers DDIM in eps space, its own token splice)
    on the same weights."""
    from diffusers import DDIMScheduler

    from motionprompt.amortized.train import TokenTrainer
    from motionprompt.disc.checkpoint import load_discriminator
    from motionprompt.hosts.diffusers.models import VideoModel
    from motionprompt.hosts.diffusers.sources import ModelSource

    ui = _webui(tmp_path)
    job = _job(ui, tmp_path, out=tmp_path / "webui", cache_batch=1)
    job.run()
    assert job.status == "done", job.error
    webui = token_file.load_token(job.token).vectors

    sd = ui.sd_model
    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")
    model = VideoModel(_UNet(sd), _VAE(sd), _TextEncoder(sd), _Tokenizer(sd.cond_stage_model.wrapped.tokenizer), sched)
    mm = ui.ad.mm_animatediff
    mm.ad_params = ui.ad.AnimateDiffProcess(enable=True, video_length=FRAMES, batch_size=FRAMES)
    mm.inject(sd)  # the same motion module weights AnimateDiff injected for the carrier (fixed seed)
    try:
        tokens = {}
        for ulp in (0, 1):  # 1: every cached latent one float32 rounding step off (x (1 + 2^-23))
            ref_job = _job(ui, tmp_path, out=tmp_path / f"reference{ulp}", cache_batch=1)
            trainer = TokenTrainer(ref_job.cfg, disc=load_discriminator(ui.disc), log=lambda m: None,
                                   source=ModelSource(model, FRAMES, SIZE, {"kind": "webui double, diffusers-style"}))
            build = trainer.build_caches

            def rounded(build=build, trainer=trainer, ulp=ulp):
                build()
                trainer.cache = trainer.cache * (1 + ulp * 2.0**-23)

            trainer.build_caches = rounded
            assert trainer.run() == "done"
            tokens[ulp] = trainer.tokens.detach()
    finally:
        mm.restore(sd)
    reference = tokens[0]
    moved = (reference - trainer.tokens0).norm()
    noise = (tokens[1] - tokens[0]).norm()  # how far one rounding step in the latents moves the trained token
    diff = (webui - reference).norm()
    print(f"token moved {moved:.3e}; one-ulp latents {noise:.3e}; WebUI path vs reference {diff:.3e}")
    assert moved > 0 and noise > 0
    assert diff <= 5 * noise  # measured: 3.8e-6 against 5.4e-6 (the token moved 4.2e-3)


# ------------------------------------------------------------------ the tab's section: start, export, refresh
def _values(ui, **kw):
    v = {"disc_name": ui.disc.name, "motion_module": "mm_sd15_v2.ckpt", "name": "mptok", "prompts_text": "\n".join(PROMPTS), "seeds": 1, "val_fraction": 0.2,
         "steps": 2, "batch": 2, "lr": 1e-3, "sampling_steps": 6, "cfg_scale": 5.0, "frames": FRAMES, "size": SIZE,
         "memory": "low", "refresh_every": 0, "seed": 0, "resume": False, "overwrite": False, **kw}
    return list(v.values())


def test_tab_trains_exports_into_embeddings_and_refreshes_the_accordion(tmp_path, monkeypatch):
    ui = _webui(tmp_path)
    from modules import sd_hijack, shared

    from motionprompt.hosts.webui import token_export, token_tab

    monkeypatch.setattr(shared.cmd_opts, "embeddings_dir", str(tmp_path / "embeddings"), raising=False)
    streamed = list(token_tab.start(*_values(ui)))
    text, fig, job = streamed[-1]
    assert job.error is None and job.status == "done", text
    assert "Done" in text and "mptok" in text and fig is not None
    exported = tmp_path / "embeddings" / "mptok.safetensors"
    meta = token_file.load_token(exported).meta
    assert job.exported == exported and meta["training"]["updates"] == 2
    assert meta["data"]["model"]["model"].endswith("+ mm_sd15_v2.ckpt")  # the motion module picked in the tab
    assert "mptok" in sd_hijack.model_hijack.embedding_db.word_embeddings  # the name works at once
    assert [u["choices"] for u in token_export.dropdown_updates("mptok.safetensors")] == \
           [["mptok.safetensors"]] * len(token_export.DROPDOWNS)
    assert len(token_export.DROPDOWNS) == 1 and token_export.dropdown_updates("mptok.safetensors")[0]["value"] == \
           "mptok.safetensors"  # the txt2img accordion of the double (its only tab)


def test_tab_refuses_to_mix_runs(tmp_path, monkeypatch):
    ui = _webui(tmp_path)
    from modules import shared

    from motionprompt.hosts.webui import token_tab

    monkeypatch.setattr(shared.cmd_opts, "embeddings_dir", str(tmp_path / "embeddings"), raising=False)

    list(token_tab.start(*_values(ui, steps=1)))
    with pytest.raises(ValueError, match="Resume"):
        token_tab.make_job(*_values(ui))
    with pytest.raises(ValueError, match="prompts differ"):
        token_tab.make_job(*_values(ui, resume=True, prompts_text="\n".join(PROMPTS[:3])))
    job = token_tab.make_job(*_values(ui, resume=True, steps=2))
    token_tab.run_job(job, export=False)
    assert job.status == "done" and job.rows[-1]["step"] == 2 and len(job.rows) == 2  # continued, not restarted
    text = "".join(t for t, _f, _j in token_tab.start(*_values(ui, prompts_text="one prompt")))
    assert "at least two prompts" in text
    text = "".join(t for t, _f, _j in token_tab.start(*_values(ui, disc_name="gone.safetensors")))
    assert "gone.safetensors not found" in text


def test_interrupt_while_the_latents_are_sampled_stops_at_once_and_saves_nothing(tmp_path, monkeypatch):
    ui = _webui(tmp_path)
    from modules import shared

    from motionprompt.hosts.webui import token_tab

    monkeypatch.setattr(shared.cmd_opts, "embeddings_dir", str(tmp_path / "embeddings"), raising=False)
    job = token_tab.make_job(*_values(ui))
    real = job._sampled

    def interrupt_after_first_clip(done, total):
        real(done, total)
        if done == 1:
            token_tab.SLOT.job = job
            token_tab.interrupt()

    job._sampled = interrupt_after_first_clip
    token_tab.run_job(job)
    assert job.status == "stopped" and job.error is None and not job.rows and job.exported is None
    assert "nothing was saved" in token_tab.status_html(job)
    assert not (tmp_path / "models" / "MotionPrompt" / "tokens" / "mptok" / "state.safetensors").exists()
    token_tab.SLOT.job = None
    shared.state.__init__()
    job = token_tab.make_job(*_values(ui))  # no Resume needed: there is nothing to resume
    token_tab.run_job(job, export=False)
    assert job.status == "done", job.error
