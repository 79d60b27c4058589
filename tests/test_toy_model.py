"""Toy model files, its resumable trainer, and sampling that pairs plain and guided clips by seed."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from motionprompt.hosts.diffusers.host import DiffusersVideoHost
from motionprompt.hosts.diffusers.sampler import sample
from motionprompt.toy.model import ToyArch, ToyModelError, build, load_model, save_model, set_latent_stats
from motionprompt.toy.sample import decode_latents, sample_batch
from motionprompt.toy.train import ToyTrainConfig, ToyTrainer, train_seed

TINY = ToyArch(size=16, unet_channels=(16, 32), vae_channels=(16, 16), text_width=16, text_layers=1)


def tiny_parts(seed=0):
    parts = build(TINY, seed=seed)
    set_latent_stats(parts, mean=0.3, std=2.0)
    for m in parts.modules().values():
        m.eval()
    return parts


@pytest.mark.diffusers
def test_saved_model_loads_back_with_the_same_outputs_and_latent_statistics(tmp_path, one_torch_thread):
    parts = tiny_parts()
    path = save_model(parts, tmp_path / "m.safetensors", {"unet_steps": 7}, dtype=torch.float32)
    back = load_model(path)
    assert back.arch == parts.arch and back.meta == {"unet_steps": 7}
    assert back.vae.config.shift_factor == pytest.approx(0.3) and back.vae.config.scaling_factor == pytest.approx(0.5)
    z = torch.randn(1, 4, 16, 4, 4)
    np.testing.assert_array_equal(decode_latents(parts, z), decode_latents(back, z))
    ids = torch.tensor([[parts.tokenizer.bos, 5, 6, parts.tokenizer.eos]])
    torch.testing.assert_close(back.text(ids)[0], parts.text(ids)[0])


def test_foreign_or_missing_files_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ToyModelError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"format": "something"})
    with pytest.raises(ToyModelError, match="not a toy model"):
        load_model(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ToyModelError, match="cannot read"):
        load_model(tmp_path / "junk.safetensors")


@pytest.mark.diffusers
def test_reference_host_decodes_with_the_vae_shift_like_the_toy_sampler(one_torch_thread):
    parts = tiny_parts()
    host = DiffusersVideoHost(parts.video_model(), "a red circle moving left slowly")
    z = torch.randn(1, 4, 16, 4, 4)
    with torch.no_grad():
        via_host = host.decode_video(z).numpy()
    np.testing.assert_array_equal(via_host, decode_latents(parts, z)[0])


@pytest.mark.diffusers
def test_plain_clip_of_the_reference_sampler_is_the_batched_sampler_clip_of_that_seed(one_torch_thread):
    parts = tiny_parts()
    prompt = "a red circle moving left slowly"
    host = DiffusersVideoHost(parts.video_model(), prompt)
    ref = sample(host, None, steps=3, cfg_scale=5.0, seed=42, num_frames=16, height=16, width=16).frames.numpy()
    batch = sample_batch(parts, ["a blue square moving up quickly", prompt], [7, 42], steps=3, cfg_scale=5.0)
    assert np.abs(ref.astype(int) - batch[1].astype(int)).max() <= 1
    assert np.abs(batch[0].astype(int) - batch[1].astype(int)).mean() > 1  # other prompt/seed, other clip


@pytest.mark.diffusers
def test_training_stops_saves_and_resumes_where_it_stopped(tmp_path, one_torch_thread):
    state = tmp_path / "state.safetensors"
    cfg = ToyTrainConfig(vae_steps=2, vae_batch=4, steps=3, batch=2, save_every=1e9)
    calls = []

    def stop_after_two():
        calls.append(1)
        return len(calls) > 4  # 2 VAE steps + 2 UNet steps, then stop

    t = ToyTrainer(cfg, state, arch=TINY)
    assert t.run(stop=stop_after_two) == "stopped"
    assert (t.phase, t.vae_step, t.step) == ("unet", 2, 2)
    meta_model = tmp_path / "toy_model.safetensors"
    assert load_model(meta_model).meta["unet_steps"] == 2
    shift = t.parts.arch.shift_factor
    resumed = ToyTrainer(cfg, state)  # arch comes from the state file
    assert (resumed.phase, resumed.vae_step, resumed.step) == ("unet", 2, 2)
    assert resumed.parts.arch.shift_factor == shift and resumed.parts.arch.size == 16
    for k, v in t.parts.unet.state_dict().items():
        torch.testing.assert_close(resumed.parts.unet.state_dict()[k], v)
    assert resumed.run() == "done" and resumed.step == 3
    assert [h["step"] for h in resumed.history if h["phase"] == 1] == [1, 2, 3]
    assert load_model(meta_model).meta["unet_steps"] == 3


@pytest.mark.diffusers
def test_a_state_from_other_settings_is_refused(tmp_path, one_torch_thread):
    state = tmp_path / "state.safetensors"
    t = ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=0, batch=2), state, arch=TINY)
    t.run()
    with pytest.raises(ValueError, match="seed=0"):
        ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=0, batch=2, seed=1), state)
    with pytest.raises(ValueError, match="level='toy'"):
        ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=0, batch=2, level="full"), state)
    save_file({"x": torch.zeros(1)}, str(state), metadata={"format": "x", "config": json.dumps({})})
    with pytest.raises(ValueError, match="not a toy training state"):
        ToyTrainer(ToyTrainConfig(), state)


@pytest.mark.diffusers
def test_a_larger_batch_on_resume_continues_the_same_run_and_is_recorded(tmp_path, one_torch_thread):
    state = tmp_path / "state.safetensors"
    ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=1, batch=2, save_every=1e9), state, arch=TINY).run()
    bigger = ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=2, batch=3, save_every=1e9), state)
    assert bigger.step == 1 and bigger.notes == ["batch 2 -> 3 at UNet step 1"]
    assert bigger.run() == "done" and bigger.step == 2
    again = ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=2, batch=3), state)
    assert again.notes == ["batch 2 -> 3 at UNet step 1"]  # kept in the state, not noted twice
    assert load_model(tmp_path / "toy_model.safetensors").meta["notes"] == again.notes


@pytest.mark.diffusers
def test_a_state_from_an_older_world_layout_resumes_with_a_note_and_a_fresh_ema(tmp_path, one_torch_thread, monkeypatch):
    from dataclasses import replace

    from motionprompt.toy import train
    from motionprompt.toy.world import LEVELS

    state = tmp_path / "state.safetensors"
    monkeypatch.setitem(train.LEVELS, "toy", replace(LEVELS["toy"], layout="free"))
    ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=1, batch=2, save_every=1e9), state, arch=TINY).run()
    same = ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=1, batch=2), state)
    assert same.notes == [] and same.ema  # same world: the EMA goes on
    monkeypatch.undo()
    moved = ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=2, batch=2, save_every=1e9), state)
    assert moved.notes == ["world layout free -> centred at UNet step 1"] and moved.ema == {}
    assert moved.run() == "done"
    again = ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=2, batch=2), state)
    assert again.notes == moved.notes and again.ema  # recorded once; the new world's EMA is kept


@pytest.mark.diffusers
def test_clips_rendered_by_worker_processes_train_exactly_like_the_loop(tmp_path, one_torch_thread):
    weights = {}
    for workers in (0, 1):
        state = tmp_path / f"w{workers}" / "state.safetensors"
        state.parent.mkdir()
        t = ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=3, batch=2, save_every=1e9, workers=workers),
                       state, arch=TINY)
        assert t.run() == "done"
        weights[workers] = t.parts.unet.state_dict()
    for k, v in weights[0].items():
        torch.testing.assert_close(weights[1][k], v, rtol=0, atol=0)


@pytest.mark.diffusers
def test_the_x0_floor_lifts_only_the_low_snr_weights_and_a_resume_keeps_the_stored_setting(tmp_path, one_torch_thread):
    import argparse

    from motionprompt.toy.train import loss_weight
    from motionprompt.toy.train_cli import add_arguments, saved_config

    ab = torch.tensor([0.005, 0.05, 0.5, 0.99])
    snr = ab / (1 - ab)
    plain, floored = loss_weight(ab), loss_weight(ab, 0.25)
    torch.testing.assert_close(plain * snr, torch.clamp(snr, max=5.0))  # min-SNR-5: x0 weight = min(SNR, 5)
    assert torch.all(floored * snr >= 0.25 - 1e-6)
    assert floored[0] > 10 * plain[0] and torch.equal(floored[2:], plain[2:])  # high SNR untouched
    state = tmp_path / "state.safetensors"
    ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=1, batch=2, x0_floor=0.25), state, arch=TINY).run()
    assert saved_config(state)["x0_floor"] == 0.25
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--state", str(state)])
    assert (args.x0_floor, args.batch, args.lr, args.prediction) == (None,) * 4  # run() takes the state's values
    changed = ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=1, batch=2, x0_floor=0.5), state)
    assert changed.notes == ["x0_floor 0.25 -> 0.5 at UNet step 1"]


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_the_weighted_output_error_is_the_min_snr_weighted_error_of_the_x0_the_sampler_derives(prediction):
    from motionprompt.engine.diffusion import predicted_x0
    from motionprompt.toy.train import loss_weight, target

    torch.manual_seed(0)
    z, noise = torch.randn(4, 4, 3, 2, 2, dtype=torch.float64), torch.randn(4, 4, 3, 2, 2, dtype=torch.float64)
    ab = torch.tensor([0.0 if prediction == "v_prediction" else 0.002, 0.05, 0.5, 0.99], dtype=torch.float64)
    abv = ab.view(4, 1, 1, 1, 1)
    noisy = abv.sqrt() * z + (1 - abv).sqrt() * noise
    goal = target(z, noise, abv, prediction)
    torch.testing.assert_close(predicted_x0(noisy, goal, abv, prediction), z, atol=1e-5, rtol=1e-5)  # exact target
    wrong = goal + 0.1 * torch.randn_like(goal)
    out_err = (wrong - goal).pow(2).mean(dim=(1, 2, 3, 4))
    x0_err = (predicted_x0(noisy, wrong, abv, prediction) - z).pow(2).mean(dim=(1, 2, 3, 4))
    snr = ab / (1 - ab)
    floor = 1.0
    torch.testing.assert_close(loss_weight(ab, floor, prediction) * out_err, snr.clamp(floor, 5.0) * x0_err, rtol=1e-5, atol=0)
    if prediction == "epsilon":
        with pytest.raises(ValueError, match="zero SNR"):
            loss_weight(torch.tensor([0.0, 0.5]), floor, prediction)


@pytest.mark.diffusers
def test_switching_to_v_prediction_on_resume_is_recorded_restarts_the_ema_and_ships_a_zero_snr_model(
        tmp_path, one_torch_thread):
    state = tmp_path / "state.safetensors"
    ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=1, batch=2, save_every=1e9, prediction="epsilon"), state,
               arch=TINY).run()
    assert TINY.prediction_type == "epsilon"  # the caller's arch is not changed
    v = ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=3, batch=2, save_every=1e9,
                                  prediction="v_prediction"), state)
    assert v.notes == ["prediction epsilon -> v_prediction at UNet step 1"]
    assert v.ema == {} and float(v.alphas_cumprod[-1]) == 0.0  # the training schedule ends in pure noise
    assert v.run() == "done"
    raw = dict(v.parts.unet.named_parameters())
    for k, e in v.ema.items():  # two updates since the restart: close to the raw weights, not to the eps run's
        if k.startswith("unet."):
            assert torch.allclose(e, raw[k[5:]].detach(), atol=5e-3), k
    model = load_model(tmp_path / "toy_model.safetensors")
    sched = model.video_model().scheduler
    assert model.arch.prediction_type == sched.config.prediction_type == "v_prediction"
    assert float(sched.alphas_cumprod[-1]) == 0.0 and sched.config.timestep_spacing == "trailing"
    clip = sample_batch(model, ["a red circle moving left slowly"], [3], steps=3)
    assert clip.shape == (1, 16, 16, 16, 3) and clip.std() > 0


def test_training_data_is_a_function_of_seed_and_step_and_never_an_evaluation_seed():
    from motionprompt.toy.protocol import SEEDS

    cfg = ToyTrainConfig()
    seeds = {train_seed(cfg, step, i, phase) for step in (0, 1, 10**7) for i in range(8) for phase in ("vae", "unet")}
    assert len(seeds) == 48 and max(seeds) < min(SEEDS.values())
    assert train_seed(cfg, 5, 3, "unet") == train_seed(ToyTrainConfig(), 5, 3, "unet")


@pytest.mark.diffusers
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_the_direction_probe_sees_a_model_that_knows_the_clip_only_from_its_true_caption(prediction):
    from types import SimpleNamespace

    from motionprompt.hosts.diffusers.models import ddim_scheduler
    from motionprompt.toy.probe import opposite, probe_rows
    from motionprompt.toy.train import target

    assert opposite("a red circle moving left slowly") == "a red circle moving right slowly"
    assert opposite("a blue star moving up quickly") == "a blue star moving down quickly"
    with pytest.raises(ValueError, match="no single direction"):
        opposite("a red circle")
    sched = ddim_scheduler(prediction, zero_snr=prediction == "v_prediction")
    torch.manual_seed(0)
    z = torch.randn(3, 4, 2, 2, 2)
    conds = {"true": torch.randn(3, 5, 8), "opposite": torch.randn(3, 5, 8), "empty": torch.randn(3, 5, 8)}

    def oracle(noisy, t, encoder_hidden_states):  # exact for its true caption, x0 off by 0.5 for any other
        knows = torch.equal(encoder_hidden_states, conds["true"].repeat_interleave(2, dim=0))
        ab = sched.alphas_cumprod[int(t)]
        x0 = z if knows else z + 0.5
        eps = (noisy - ab.sqrt() * x0) / (1 - ab).sqrt()  # the noise that makes x0 the clean clip
        return SimpleNamespace(sample=target(x0, eps, ab, prediction))

    result = probe_rows(oracle, sched, z, conds, timesteps=(200, 999))
    assert result["prediction_type"] == prediction and [r["t"] for r in result["rows"]] == [200, 999]
    for row in result["rows"]:
        assert row["x0_error_true"] < 1e-8 and row["x0_error_opposite"] == pytest.approx(0.25, rel=1e-3)
        assert row["true_better"] == 1.0 and row["x0_error_empty"] == pytest.approx(0.25, rel=1e-3)


def test_the_timestep_shift_keeps_old_runs_draws_and_moves_steps_to_high_noise():
    from motionprompt.toy.train import draw_timesteps

    def draws(shift, n=20000):
        return draw_timesteps(n, 1000, shift, torch.Generator().manual_seed(4))

    # shift 1 draws exactly what the trainer drew before the option existed: a resumed run sees the same data
    assert torch.equal(draws(1.0, 64), torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(4)))
    plain, shifted = draws(1.0), draws(3.0)
    assert int(shifted.min()) >= 0 and int(shifted.max()) <= 999
    assert abs(float((plain > 700).float().mean()) - 0.30) < 0.02
    assert abs(float((shifted > 700).float().mean()) - 0.5625) < 0.02  # u > 7/16 under s = 3
    assert float(shifted.float().median()) > 700 > float(plain.float().median())


@pytest.mark.diffusers
def test_the_text_learning_rate_multiplier_moves_only_the_text_encoder_faster(tmp_path, one_torch_thread):
    moved = {}
    for mult in (1.0, 10.0):
        t = ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=1, batch=2, save_every=1e9, text_lr_mult=mult,
                                      text_encoder="trained"), tmp_path / f"s{mult}.safetensors", arch=TINY)
        start = {k: p.detach().clone() for k, p in t._trainable().items()}
        assert t.run() == "done"
        moved[mult] = {part: sum(float((p.detach() - start[k]).abs().sum()) for k, p in t._trainable().items()
                                 if k.startswith(part)) for part in ("unet.", "text.")}
    assert moved[10.0]["unet."] == pytest.approx(moved[1.0]["unet."], rel=1e-3)
    assert moved[10.0]["text."] == pytest.approx(10 * moved[1.0]["text."], rel=0.05)  # Adam's first step ~ lr


@pytest.mark.diffusers
def test_a_frozen_text_encoder_keeps_its_seed_initialisation_and_switching_to_it_resets_a_trained_one(
        tmp_path, one_torch_thread):
    from motionprompt.toy.train import saved_setting

    def same(a, b):
        return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())

    fresh = build(TINY, seed=0).text
    state = tmp_path / "state.safetensors"
    cfg = {"vae_steps": 1, "vae_batch": 4, "batch": 2, "save_every": 1e9}
    trained = ToyTrainer(ToyTrainConfig(**cfg, steps=1, text_encoder="trained", text_lr_mult=10.0), state, arch=TINY)
    assert trained.run() == "done" and not same(trained.parts.text, fresh)
    frozen = ToyTrainer(ToyTrainConfig(**cfg, steps=3, text_encoder="frozen", text_lr_mult=10.0), state)
    assert frozen.notes == ["text_encoder trained -> frozen at UNet step 1"] and frozen.ema == {}
    assert same(frozen.parts.text, fresh) and not any(k.startswith("text.") for k in frozen._trainable())
    unet_before = {k: v.clone() for k, v in frozen.parts.unet.state_dict().items()}
    assert frozen.run() == "done" and same(frozen.parts.text, fresh)
    assert any(not torch.equal(v, unet_before[k]) for k, v in frozen.parts.unet.state_dict().items())
    shipped = load_model(tmp_path / "toy_model.safetensors").text  # the EMA model carries the frozen encoder
    assert all(torch.allclose(v, fresh.state_dict()[k].float(), atol=1e-3) for k, v in shipped.state_dict().items())
    again = ToyTrainer(ToyTrainConfig(**cfg, steps=3, text_encoder="frozen", text_lr_mult=10.0), state)
    assert again.notes == frozen.notes and again.ema and same(again.parts.text, fresh)  # no second reset
    # states written before the setting existed trained their encoder; a new state starts frozen
    assert saved_setting({"lr": 3e-4}, "text_encoder") == "trained" and saved_setting({}, "text_encoder") == "frozen"
    assert saved_setting({"text_encoder": "frozen"}, "text_encoder") == "frozen"
    with pytest.raises(ValueError, match="'trained' or 'frozen'"):
        ToyTrainer(ToyTrainConfig(**cfg, steps=3, text_encoder="fixed"), state)


def test_a_new_run_trains_with_the_shipped_models_final_recipe_and_an_old_state_keeps_what_it_had():
    """The shipped model changed its recipe on the way (its notes); a new run starts on the last one."""
    from motionprompt.toy.model import SHIPPED
    from motionprompt.toy.train import LEARN_KEYS, LEGACY, saved_setting

    with safe_open(str(SHIPPED), "pt") as f:
        shipped = json.loads(f.metadata()["meta"])
    assert {k: getattr(ToyTrainConfig, k) for k in LEARN_KEYS} == shipped["learning"]
    for key, old in LEGACY.items():  # a state from before the key existed resumes on what it was trained with
        assert saved_setting({"lr": 3e-4}, key) == old != saved_setting({}, key)
        assert any(n.startswith(f"{key} {old} -> ") for n in shipped["notes"])  # and that is what the run had


@pytest.mark.diffusers
def test_export_writes_the_states_ema_model_and_refuses_a_state_that_has_none(tmp_path, one_torch_thread):
    from safetensors.torch import load_file

    state = tmp_path / "state.safetensors"
    early = ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=0, batch=2, save_every=1e9), state, arch=TINY)
    with pytest.raises(ValueError, match="no EMA model yet"):
        early.export(tmp_path / "m.safetensors")
    ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=1, batch=2, save_every=1e9), state, arch=TINY).run()
    ToyTrainer(ToyTrainConfig(vae_steps=1, vae_batch=4, steps=1, batch=2), state).export(tmp_path / "m.safetensors")
    a, b = load_file(tmp_path / "m.safetensors"), load_file(tmp_path / "toy_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # what every save writes beside it
    meta = load_model(tmp_path / "m.safetensors").meta
    assert meta["unet_steps"] == 1 and meta["learning"]["text_encoder"] == "frozen"
