"""A WebUI user's own files as ``--model``/``--motion-adapter``: a single-file SD1.5 checkpoint and an AnimateDiff
motion module, loaded offline through diffusers' single-file loaders with SD1.5's configs from ``--config`` (or a
local Hugging Face cache), on a tiny SD1.5 written in those formats here (``sd_single_file``). No network: every
test runs with outgoing connections refused."""

import json
import re
import shutil
import socket

import pytest
import torch

from motionprompt.hosts.diffusers import sources

from .sd_single_file import build

pytestmark = pytest.mark.diffusers


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network use in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def empty_hf_cache(monkeypatch, tmp_path):
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build(tmp_path_factory.mktemp("sd15"))


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sb[k])][:5]


def test_a_checkpoint_and_motion_module_load_offline_into_the_weights_they_were_written_from(tiny, no_network,
                                                                                                empty_hf_cache):
    from diffusers import UNetMotionModel

    from motionprompt.hosts.diffusers.models import motion_adapter_config

    assert sources.single_file_kind(str(tiny.checkpoint)) == "sd"
    assert sources.single_file_kind(str(tiny.motion_module)) == "motion module"
    assert sources.source_kind(str(tiny.checkpoint)).name == "sd1.5 single file"  # not the toy kind's
    read = motion_adapter_config(tiny.motion_module)  # off the header: widths, layers, mid block, positions
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in read.items()} == {
        k: tuple(v) if isinstance(v, list) else v for k, v in tiny.adapter.config.items() if k in read}
    source = sources.load_source(str(tiny.checkpoint), frames=4, size=16, motion_adapter=str(tiny.motion_module),
                                 config=str(tiny.config))
    model = source.model
    _same(model.unet, UNetMotionModel.from_unet2d(tiny.unet2d, tiny.adapter))
    _same(model.vae, tiny.vae)
    _same(model.text_encoder, tiny.text_encoder)
    assert model.tokenizer.ids("ab c") == [64, 321, 322]  # "a", "b</w>", "c</w>": the config folder's BPE vocabulary
    assert (model.tokenizer.bos, model.tokenizer.eos, model.tokenizer.pad) == (512, 513, 513)
    assert model.scheduler.config.beta_schedule == "linear"  # AnimateDiff's betas, not SD1.5's scaled-linear
    assert source.info == {"kind": "sd1.5 single file", "file": "tiny-sd15.safetensors",
                           "motion_module": "mm_tiny.safetensors"}


def test_a_local_hugging_face_cache_of_sd15_serves_as_the_config(tiny, no_network, empty_hf_cache):
    """No --config: the configs of stable-diffusion-v1-5 in the local cache (as a download without weights leaves
    them) are used; nothing is fetched."""
    repo = empty_hf_cache / "models--stable-diffusion-v1-5--stable-diffusion-v1-5"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny.config, repo / "snapshots" / commit)
    assert sources.sd15_config_dir() == str(repo / "snapshots" / commit)
    model = sources.load_source(str(tiny.checkpoint), motion_adapter=str(tiny.motion_module)).model
    _same(model.vae, tiny.vae)


def test_generate_samples_a_webui_checkpoint_and_motion_module(tiny, tmp_path, no_network, one_torch_thread):
    from motionprompt.cli.main import main

    out = tmp_path / "g"
    assert main(["generate", "--model", str(tiny.checkpoint), "--motion-adapter", str(tiny.motion_module),
                 "--config", str(tiny.config), "--no-guidance", "--prompt", "a fox", "--steps", "2", "--frames", "4",
                 "--height", "16", "--width", "16", "--out", str(out)]) == 0
    record = json.loads((out / "record.json").read_text())
    assert record["model"] == "tiny-sd15" and (out / "plain.gif").is_file()
    assert any("single-file SD1.5 checkpoint tiny-sd15.safetensors" in n for n in record["notes"])


def test_what_cannot_load_is_refused_before_any_weights_load_with_what_to_pass(tiny, tmp_path, capsys, no_network,
                                                                              empty_hf_cache):
    from motionprompt.cli.main import main

    ckpt, mm = str(tiny.checkpoint), str(tiny.motion_module)
    with pytest.raises(ValueError, match=re.escape("--motion-adapter FILE.safetensors")) as exc:  # no motion module
        sources.load_source(ckpt, config=str(tiny.config))
    assert "single-file SD1.5 checkpoint without motion layers" in str(exc.value)
    with pytest.raises(ValueError, match="give it as --motion-adapter"):  # the motion module as the model
        sources.load_source(mm, motion_adapter=mm)
    with pytest.raises(ValueError, match="is not an AnimateDiff motion module"):  # a checkpoint as the motion module
        sources.load_source(ckpt, motion_adapter=ckpt, config=str(tiny.config))
    partial = tmp_path / "partial"
    shutil.copytree(tiny.config, partial)
    shutil.rmtree(partial / "tokenizer")
    with pytest.raises(ValueError, match=re.escape("lacks tokenizer/vocab.json, tokenizer/merges.txt")):
        sources.load_source(ckpt, motion_adapter=mm, config=str(partial))
    with pytest.raises(ValueError, match=re.escape("goes with a single-file SD1.5 checkpoint")):
        sources.load_source("tiny", config=str(tiny.config))
    sdxl = tmp_path / "sdxl.safetensors"
    _weights(sdxl, ["model.diffusion_model.input_blocks.0.0.weight", "conditioner.embedders.0.transformer.x"])
    with pytest.raises(ValueError, match=re.escape("not SD1.x")):
        sources.load_source(str(sdxl), motion_adapter=mm)
    for argv in (["token-train", "--disc", "D.safetensors", "--model", ckpt, "--motion-adapter", mm,
                  "--out", str(tmp_path / "t")],
                 ["generate", "--model", ckpt, "--motion-adapter", mm, "--no-guidance", "--out", str(tmp_path / "g")]):
        assert main(argv) == 2  # no --config and nothing cached: the configs are named, and how to get them
        err = capsys.readouterr().err
        assert "--config DIR" in err and "hf download stable-diffusion-v1-5/stable-diffusion-v1-5" in err, err
        assert "--local-dir sd15-config" in err and "MotionPrompt tab" in err, err
    assert not (tmp_path / "t").exists() and not (tmp_path / "g").exists()


def _weights(path, keys):
    from safetensors.torch import save_file

    save_file({k: torch.zeros(1) for k in keys}, str(path))
    return path


def _documented(command: str) -> list[str]:
    """The docs' command that loads the WebUI's files (``command`` with ``--config``), as tests/test_readme_commands.py
    reads it."""
    from .test_readme_commands import readme_commands

    found = [argv for _where, argv in readme_commands() if argv[0] == command and "--config" in argv]
    assert len(found) == 1, found
    return found[0]


def _filled(argv: list[str], values: dict[str, str], extra: list[str]) -> list[str]:
    """The command with the user's files (placeholders) replaced and sizes for a tiny model appended (argparse: the
    last value of a flag wins)."""
    out = list(argv)
    for i, word in enumerate(out[:-1]):
        if word in values:
            out[i + 1] = values[word]
    assert all(flag in argv for flag in values), (values, argv)
    return out + extra


def test_the_documented_generate_command_runs_on_a_webui_checkpoint(tiny, tmp_path, no_network, one_torch_thread):
    from motionprompt.cli.main import main
    from motionprompt.disc.checkpoint import save_discriminator
    from motionprompt.disc.models import build_discriminator

    from .planted_world import FLOW

    torch.manual_seed(1)
    disc = save_discriminator(tmp_path / "d.safetensors", build_discriminator("cnn", width=8, depth=2), FLOW)
    argv = _filled(_documented("generate"), {"--model": str(tiny.checkpoint), "--motion-adapter": str(tiny.motion_module),
                                             "--config": str(tiny.config), "--disc": str(disc)},
                   ["--frames", "4", "--height", "16", "--width", "16", "--steps", "4", "--device", "cpu",
                    "--out", str(tmp_path / "g")])
    assert main(argv) == 0
    record = json.loads((tmp_path / "g" / "record.json").read_text())
    assert record["model"] == "tiny-sd15" and record["summary"]["iterations"] > 0
    assert (tmp_path / "g" / "plain.gif").is_file() and (tmp_path / "g" / "guided.gif").is_file()


def test_the_documented_token_train_command_runs_on_a_webui_checkpoint(tiny, tmp_path, no_network, one_torch_thread):
    """docs/amortized.md's command for the WebUI's files, with the tiny files in place of the user's and tiny sizes:
    it trains and exports a token; the config folder is part of the resume settings."""
    from motionprompt.amortized import token_file
    from motionprompt.cli.main import main
    from motionprompt.disc.checkpoint import save_discriminator
    from motionprompt.disc.models import build_discriminator

    from .planted_world import FLOW

    torch.manual_seed(1)
    disc = save_discriminator(tmp_path / "d.safetensors", build_discriminator("cnn", width=8, depth=2), FLOW)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox running\na bird flying\na car driving\n", encoding="utf-8")
    out = tmp_path / "tok"
    argv = _filled(_documented("token-train"), {
        "--model": str(tiny.checkpoint), "--motion-adapter": str(tiny.motion_module), "--config": str(tiny.config),
        "--prompts": str(prompts), "--disc": str(disc), "--out": str(out)},
        ["--frames", "4", "--size", "16", "--steps", "1", "--batch", "1", "--seeds", "1", "--val-seeds", "1",
         "--val-steps", "1", "--sampling-steps", "4", "--window", "0.25", "0.75", "--val-fraction", "0.34"])
    assert main(argv) == 0
    tok = token_file.load_token(out / "mp_motion.safetensors", width=32)
    assert tok.vectors.shape == (1, 32)
    copy = tmp_path / "config-copy"
    shutil.copytree(tiny.config, copy)
    assert main([*argv, "--config", str(copy)]) == 2  # other configs: another model, not resumed
