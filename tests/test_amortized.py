"""Amortized MotionPrompt: trajectories, resumable training, the planted-judge effect, the CLI."""

import csv
import json
from types import SimpleNamespace

import pytest
import torch

from motionprompt.amortized import token_file
from motionprompt.amortized.train import TokenTrainConfig, TokenTrainer, TokenTrainError, trajectories
from motionprompt.engine.config import GuidanceConfig
from motionprompt.engine.guidance import MotionGuide
from motionprompt.hosts.diffusers.host import DiffusersVideoHost
from motionprompt.hosts.diffusers.sampler import sample
from motionprompt.toy.model import ToyArch, build, save_model, set_latent_stats

from .planted_world import FLOW, PROMPTS, planted_disc, planted_source

ARCH = ToyArch(size=16, frames=4, unet_channels=(16, 32), vae_channels=(16, 16), text_width=16, text_layers=1)


def toy_parts():
    parts = build(ARCH, seed=0)
    set_latent_stats(parts, mean=0.3, std=2.0)
    for m in parts.modules().values():
        m.eval()
    return parts


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# training prompts\n" + "\n".join(PROMPTS) + "\n\n", encoding="utf-8")
    return path


def planted_cfg(tmp_path, prompts_file, **kw):
    base = {"disc": "", "out": str(tmp_path / "run"), "model": "planted", "prompts": str(prompts_file),
            "val_fraction": 0.34, "seeds": 2, "val_seeds": 2, "sampling_steps": 6, "steps": 6, "batch": 2,
            "val_every": 2, "save_every": 2, "guidance": {"window_start": 0.3, "window_end": 0.7, "lr": 0.05}}
    return TokenTrainConfig(**{**base, **kw})


def _latents_spy(host):
    """The latents the reference sampler hands the guide's predictor at every step."""
    seen = []
    original = host.predictor

    def predictor(latents, t, cfg_scale, x0_mode):
        seen.append(latents.clone())
        return original(latents, t, cfg_scale, x0_mode)

    host.predictor = predictor
    return seen


@pytest.mark.diffusers
def test_cached_latents_are_the_reference_samplers_with_and_without_the_token(one_torch_thread):
    """The batched cache holds exactly the z_t the reference sampler reaches for each (prompt, seed): plainly,
    and on-policy (token at every step) = the engine's amortized mode (start token, no inner loop)."""
    vm = toy_parts().video_model()
    prompts, seeds, keep = PROMPTS[:2], [3, 5], [1, 2]
    hosts = [DiffusersVideoHost(vm, p, "", 1) for p in prompts]
    token = hosts[0].embed_init("authentic", 1) + 0.3 * torch.randn(1, ARCH.text_width)
    run = {"steps": 4, "cfg_scale": 5.0, "num_frames": ARCH.frames, "height": 16, "width": 16}
    for tokens in (None, token):
        with torch.no_grad():
            conds = [h.cond_plain if tokens is None else h.encode(tokens) for h in hosts]
        cache = trajectories(vm, conds, hosts[0].uncond, seeds, keep, 4, 5.0, ARCH.frames, 16, "cpu", batch=2)
        assert cache.shape == (2, 2, 4, ARCH.frames, 8, 8)
        for i, (host, seed) in enumerate(zip(hosts, seeds, strict=True)):
            seen = _latents_spy(host)
            if tokens is None:
                guide = SimpleNamespace(cfg=SimpleNamespace(x0_mode="cond"), conditioning=lambda *a: None, records=[])
            else:
                guide = MotionGuide(GuidanceConfig(inner_iters=0), host, None, None, start_tokens=tokens)
            sample(host, guide, seed=seed, **run)
            del host.predictor
            for j, step in enumerate(keep):
                torch.testing.assert_close(cache[i, j], seen[step][0], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(cache[0, 1], trajectories(vm, [hosts[0].cond_plain], hosts[0].uncond, [3], keep, 4, 5.0,
                                                        ARCH.frames, 16, "cpu")[0, 1], atol=1e-4)  # the token mattered


@pytest.mark.diffusers
def test_stopped_and_resumed_training_ends_with_the_uninterrupted_token(tmp_path, prompts_file, one_torch_thread):
    """Same seed, same settings: a run stopped after 2 updates and resumed from its state file (optimizer moments,
    the token the on-policy cache was last sampled with) ends bit-identical to one run straight through."""
    kw = {"steps": 5, "refresh_every": 2, "save_every": 100}
    straight = TokenTrainer(planted_cfg(tmp_path / "a", prompts_file, **kw), disc=planted_disc(),
                            source=planted_source(), log=lambda m: None)
    assert straight.run() == "done"
    first = TokenTrainer(planted_cfg(tmp_path / "b", prompts_file, **kw), disc=planted_disc(), source=planted_source(),
                         log=lambda m: None)
    assert first.run(stop=lambda: first.step >= 3) == "stopped" and first.step == 3
    resumed = TokenTrainer(planted_cfg(tmp_path / "b", prompts_file, **kw), disc=planted_disc(),
                           source=planted_source(), log=lambda m: None)
    assert resumed.step == 3 and resumed.cache_tokens is not None  # refreshed at update 2: on-policy cache restored
    assert resumed.run() == "done" and resumed.step == 5
    assert not torch.equal(straight.tokens, straight.tokens0)
    assert torch.equal(resumed.tokens, straight.tokens)
    assert torch.equal(resumed.opt.state_dict()["state"][0]["exp_avg_sq"], straight.opt.state_dict()["state"][0]["exp_avg_sq"])
    drop = {"seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed.history] == \
           [{k: v for k, v in r.items() if k not in drop} for r in straight.history]
    with open(tmp_path / "b" / "run" / "log.csv", newline="") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1", "2", "3", "4", "5"]
    a = token_file.load_token(tmp_path / "a" / "run" / "motionprompt.safetensors")
    b = token_file.load_token(tmp_path / "b" / "run" / "motionprompt.safetensors")
    assert torch.equal(a.vectors, b.vectors) and b.meta["training"]["updates"] == 5
    with pytest.raises(TokenTrainError, match="batch"):  # other settings never silently continue a state
        TokenTrainer(planted_cfg(tmp_path / "b", prompts_file, **{**kw, "batch": 3}), disc=planted_disc(),
                     source=planted_source(), log=lambda m: None)


@pytest.mark.diffusers
def test_a_token_trained_against_a_planted_discriminator_raises_its_score_on_held_out_prompts(
        tmp_path, prompts_file, one_torch_thread):
    """The planted D calls motion towards -x real; the model moves a bump at a speed its text conditioning sets.
    Training on 4 prompts must raise D on the 2 held-out ones, at every validation, by moving them the way D
    wants (measured on the model's own speed read-out, not through D)."""
    trainer = TokenTrainer(planted_cfg(tmp_path, prompts_file), disc=planted_disc(-20.0), source=planted_source(),
                           log=lambda m: None)
    assert set(trainer.val_prompts).isdisjoint(trainer.train_prompts) and len(trainer.val_prompts) == 2
    assert trainer.run() == "done"
    vals = [r["val_d"] for r in trainer.history if r.get("val_d") is not None]
    base = trainer.baseline["d_init"]
    assert len(vals) == 3 and all(b > a for a, b in zip([base, *vals], vals, strict=False)), (base, vals)
    assert vals[-1] - base > 0.01
    unet = trainer.backend.source.model.unet
    with torch.no_grad():
        speeds = {name: torch.stack([unet.speed(trainer.hosts[p].encode(t)) for p in trainer.val_prompts]).mean()
                  for name, t in (("init", trainer.tokens0), ("trained", trainer.tokens.detach()))}
    assert speeds["trained"] < speeds["init"] - 0.01
    meta = token_file.load_token(tmp_path / "run" / "motionprompt.safetensors").meta
    assert meta["validation"]["d_last"] == pytest.approx(vals[-1]) and meta["validation"]["d_init"] == pytest.approx(base)
    assert meta["flow"] == FLOW.to_dict() and meta["data"]["prompts"] == 4 and meta["init_word"] == "authentic"


@pytest.mark.diffusers
def test_training_can_start_from_an_earlier_token(tmp_path, prompts_file):
    earlier = token_file.save_token(tmp_path / "earlier.safetensors", torch.randn(2, 16))
    trainer = TokenTrainer(planted_cfg(tmp_path, prompts_file, guidance={"start_token": str(earlier)}),
                           disc=planted_disc(), source=planted_source(), log=lambda m: None)
    assert trainer.gcfg.n_tokens == 2 and torch.equal(trainer.tokens0, token_file.load_token(earlier).vectors)
    assert trainer.token_metadata()["start_token"] == "earlier.safetensors"


def test_toy_prompts_never_include_the_evaluation_captions():
    from motionprompt.amortized.train import prompt_split
    from motionprompt.toy.protocol import caption_split

    train, held, source = prompt_split(TokenTrainConfig(disc=""))
    assert "guiding-split" in source and held and not set(held) & set(train)
    assert not (set(train) | set(held)) & set(caption_split()["eval"])


@pytest.mark.diffusers
def test_cli_trains_exports_and_renames_a_token(tmp_path, prompts_file, one_torch_thread):
    from motionprompt.cli.main import main
    from motionprompt.disc.checkpoint import save_discriminator
    from motionprompt.disc.models import build_discriminator

    model = save_model(toy_parts(), tmp_path / "toy.safetensors", dtype=torch.float32)
    torch.manual_seed(1)
    disc = save_discriminator(tmp_path / "d.safetensors", build_discriminator("cnn", width=8, depth=2), FLOW)
    out = tmp_path / "tok"
    argv = ["token-train", "--disc", str(disc), "--model", str(model), "--prompts", str(prompts_file), "--out", str(out),
            "--name", "mp_test", "--steps", "2", "--batch", "1", "--seeds", "1", "--val-seeds", "1", "--val-steps", "1",
            "--sampling-steps", "4", "--window", "0.25", "0.75", "--tokens", "2", "--optimizer", "nsgd", "--lr", "0.1"]
    assert main(argv) == 0
    tok = token_file.load_token(out / "mp_test.safetensors", width=ARCH.text_width, n_tokens=2)
    assert tok.meta["discriminator"]["sha256"] == token_file.file_sha256(disc)
    assert tok.meta["training"]["optimizer"] == "nsgd" and tok.meta["data"]["guided_steps"] == [1, 2]
    assert main([*argv, "--batch", "2"]) == 2  # a state from other settings is refused, not continued
    assert main(["token-export", str(out / "mp_test.safetensors"), "--name", "walk", "--to", str(tmp_path / "emb")]) == 0
    copy = token_file.load_token(tmp_path / "emb" / "walk.safetensors")
    assert copy.name == "walk" and torch.equal(copy.vectors, tok.vectors) and copy.meta["training"] == tok.meta["training"]
    gen = tmp_path / "gen"  # generate with the token as it is: no discriminator needed
    assert main(["generate", "--model", str(model), "--start-token", str(copy.path), "--inner-iters", "0", "--steps", "2",
                 "--frames", "4", "--out", str(gen)]) == 0
    record = json.loads((gen / "record.json").read_text())
    assert record["config"]["start_token"] == copy.path and record["config"]["n_tokens"] == 2
    assert record["summary"]["iterations"] == 0 and (gen / "guided.gif").is_file()


@pytest.mark.diffusers
def test_cli_stopped_by_sigterm_saves_says_so_exits_0_and_continues(tmp_path, prompts_file, one_torch_thread, capsys,
                                                                   monkeypatch):
    """Issue 26: a token-train stopped by SIGTERM after saving exited 130, as a failure would."""
    import os
    import signal

    from motionprompt.cli.main import main
    from motionprompt.disc.checkpoint import save_discriminator
    from motionprompt.disc.models import build_discriminator

    model = save_model(toy_parts(), tmp_path / "toy.safetensors", dtype=torch.float32)
    torch.manual_seed(1)
    disc = save_discriminator(tmp_path / "d.safetensors", build_discriminator("cnn", width=8, depth=2), FLOW)
    out = tmp_path / "tok"
    argv = ["token-train", "--disc", str(disc), "--model", str(model), "--prompts", str(prompts_file), "--out", str(out),
            "--name", "mp_test", "--steps", "3", "--batch", "1", "--seeds", "1", "--val-seeds", "1", "--val-steps", "1",
            "--sampling-steps", "4", "--window", "0.25", "0.75", "--save-every", "10"]
    original = TokenTrainer.update

    def update_then_sigterm(self):
        row = original(self)
        if self.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler or `kill` sends
        return row

    monkeypatch.setattr(TokenTrainer, "update", update_then_sigterm)
    handler = signal.getsignal(signal.SIGTERM)
    assert main(argv) == 0
    assert signal.getsignal(signal.SIGTERM) is handler  # ours only while it trains
    err = capsys.readouterr().err
    assert "stopped by SIGTERM and saved at update 1/3" in err and "run the same command again" in err, err[-800:]
    assert (out / "state.safetensors").is_file() and (out / "mp_test.safetensors").is_file()
    monkeypatch.setattr(TokenTrainer, "update", original)
    assert main(argv) == 0
    assert "done: update 3/3" in capsys.readouterr().err


@pytest.mark.diffusers
def test_speed_term_keeps_the_prompted_speed_the_discriminator_would_change(tmp_path, prompts_file, one_torch_thread):
    """The planted D wants motion towards -x; the planted model moves its bump at a speed the text sets, so a token
    trained for D alone changes the held-out flow speed (the validation's ``val_speed``). With ``lambda_speed`` the
    token keeps it much closer to the prompt alone's (1.0), measured both through the flow and on the model's own
    speed read-out."""
    runs = {}
    for weight in (0.0, 50.0):
        trainer = TokenTrainer(planted_cfg(tmp_path / str(weight), prompts_file, lambda_speed=weight),
                               disc=planted_disc(-20.0), source=planted_source(), log=lambda m: None)
        assert trainer.run() == "done"
        unet = trainer.backend.source.model.unet
        with torch.no_grad():
            speed = {name: torch.stack([unet.speed(trainer.hosts[p].encode(t) if t is not None else trainer.hosts[p].cond_plain)
                                        for p in trainer.val_prompts]).mean()
                     for name, t in (("plain", None), ("trained", trainer.tokens.detach()))}
        runs[weight] = (trainer.last_validation()["speed_ratio"], float(speed["trained"] - speed["plain"]), trainer)
    (ratio_free, shift_free, free), (ratio_held, shift_held, held) = runs[0.0], runs[50.0]
    print(f"speed ratio {ratio_free:.3f} -> {ratio_held:.3f}; model speed shift {shift_free:+.4f} -> {shift_held:+.4f}")
    assert abs(ratio_held - 1) < 0.5 * abs(ratio_free - 1), (ratio_free, ratio_held)
    assert abs(shift_held) < 0.5 * abs(shift_free), (shift_free, shift_held)
    assert all(r["speed"] == 0 for r in free.history) and any(r["speed"] > 0 for r in held.history)
    assert token_file.load_token(tmp_path / "50.0" / "run" / "motionprompt.safetensors").meta["loss"]["lambda_speed"] == 50.0


@pytest.mark.diffusers
def test_a_run_that_fails_keeps_its_finished_updates_and_resumes_to_the_same_token(tmp_path, prompts_file,
                                                                                     one_torch_thread):
    """Out of memory or a host error at update 3 (no periodic save since the start): the two finished updates are
    saved before the error is raised, and the next run continues to the token an uninterrupted run ends with."""
    kw = {"steps": 5, "save_every": 100}
    straight = TokenTrainer(planted_cfg(tmp_path / "a", prompts_file, **kw), disc=planted_disc(),
                            source=planted_source(), log=lambda m: None)
    assert straight.run() == "done"
    failing = TokenTrainer(planted_cfg(tmp_path / "b", prompts_file, **kw), disc=planted_disc(), source=planted_source(),
                           log=lambda m: None)
    real = failing.update

    def update():
        if failing.step == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real()

    failing.update = update
    with pytest.raises(torch.cuda.OutOfMemoryError):
        failing.run()
    resumed = TokenTrainer(planted_cfg(tmp_path / "b", prompts_file, **kw), disc=planted_disc(),
                           source=planted_source(), log=lambda m: None)
    assert resumed.step == 2 and [r["step"] for r in resumed.history] == [1, 2]
    assert resumed.run() == "done"
    assert torch.equal(resumed.tokens, straight.tokens)


@pytest.mark.diffusers
def test_a_failure_during_validation_keeps_the_update_it_followed(tmp_path, prompts_file, one_torch_thread):
    kw = {"steps": 3, "save_every": 100, "val_every": 2}
    failing = TokenTrainer(planted_cfg(tmp_path, prompts_file, **kw), disc=planted_disc(), source=planted_source(),
                           log=lambda m: None)
    real = failing.validate

    def validate(tokens):
        if failing.step == 2:
            raise RuntimeError("host error during validation")
        return real(tokens)

    failing.validate = validate
    with pytest.raises(RuntimeError, match="validation"):
        failing.run()
    resumed = TokenTrainer(planted_cfg(tmp_path, prompts_file, **kw), disc=planted_disc(), source=planted_source(),
                           log=lambda m: None)
    assert resumed.step == 2 and [r["step"] for r in resumed.history] == [1, 2]
    assert resumed.history[-1].get("val_d") is None  # the row of the update whose validation failed
    assert torch.equal(resumed.tokens, failing.tokens.detach())
