"""The model-source and world registries (``hosts.diffusers.sources``): the toy world plugs into generate,
token-train and evaluate through them, as any model family can."""

from pathlib import Path

import pytest

from motionprompt.hosts.diffusers import sources


@pytest.fixture
def fake_kind(monkeypatch):
    monkeypatch.setattr(sources, "_KINDS", list(sources._KINDS))
    monkeypatch.setattr(sources, "_WORLDS", dict(sources._WORLDS))
    world = sources.World("fake", "fake world", lambda split: [f"{split} caption"], lambda kind, n: list(range(n)),
                          lambda prompt: prompt.endswith("caption"), lambda frames, prompt: {"seen": 1.0}, ("seen",),
                          lambda caption, seed, size: None)
    sources.register_world(world)
    loaded = []

    def load(spec, frames, size, device="cpu", motion_adapter=None):
        loaded.append((spec, frames, size, device))
        return sources.ModelSource(object(), frames, size, {"kind": "fake"})

    sources.register_source(sources.SourceKind("fake", lambda s: s.startswith("fake:"), load,
                                               lambda s: Path(s[5:]), world="fake"))
    return loaded


def test_a_registered_kind_loads_its_specs_and_names_its_world(fake_kind):
    source = sources.load_source("fake:m.bin", frames=8, size=32)
    assert source.info == {"kind": "fake"} and fake_kind == [("fake:m.bin", 8, 32, "cpu")]
    assert sources.weights_file("fake:m.bin") == Path("m.bin")
    assert sources.weights_file("some/folder") == Path("some/folder")  # no kind takes it: a path
    world = sources.world_for("fake:m.bin")
    assert world.title == "fake world" and world.captions("eval") == ["eval caption"] and world.seeds("eval", 2) == [0, 1]
    assert sources.model_world("tiny") is None and sources.source_kind("some/folder") is None


def test_the_toy_world_registers_itself_and_is_the_default_world():
    import motionprompt.toy  # noqa: F401
    from motionprompt.toy.protocol import caption_split, seeds

    assert sources.source_kind("toy").world == "toy" and sources.source_kind("my/toy.safetensors").name == "toy"
    assert sources.world_for("tiny").name == "toy"  # a model without a world of its own takes the default one
    toy = sources.world_for("toy")
    assert toy.captions("guide") == caption_split()["guide"] and toy.seeds("token_train", 2) == seeds("token_train", 2)
    assert toy.writes(caption_split()["eval"][0]) and not toy.writes("a white fox running on a rock, snow")


def _weights(path, keys):
    import torch
    from safetensors.torch import save_file

    save_file({k: torch.zeros(1) for k in keys}, str(path))
    return path


def test_webui_files_are_told_apart_by_their_keys_and_pickles_are_refused_with_what_to_pass(tmp_path, capsys):
    """A WebUI checkpoint goes to the single-file kind (not the toy kind, which took any .safetensors), a motion module
    is recognised as one, and a pickle is never opened: one message, before anything loads, says to use the
    .safetensors version. (Loading the files: tests/test_single_file.py.)"""
    from motionprompt.cli.main import main
    from motionprompt.hosts.diffusers.sources import load_source, single_file_kind, source_kind

    ckpt = _weights(tmp_path / "v1-5-pruned.safetensors", ["model.diffusion_model.input_blocks.0.0.weight",
                                                           "first_stage_model.decoder.conv_in.weight",
                                                           "cond_stage_model.transformer.text_model.final_layer_norm.weight"])
    sdxl = _weights(tmp_path / "sdxl.safetensors", ["model.diffusion_model.input_blocks.0.0.weight",
                                                    "conditioner.embedders.0.transformer.text_model.x"])
    mm = _weights(tmp_path / "mm_sd15_v3.safetensors",
                  ["down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight"])
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"not read")
    assert [single_file_kind(str(p)) for p in (ckpt, sdxl, mm, pickle, tmp_path)] == [
        "sd", "sd other", "motion module", "pickle", None]
    assert single_file_kind("motionprompt/toy/weights/toy_model.safetensors") is None  # the toy model still loads
    assert source_kind(str(ckpt)).name == "sd1.5 single file" and source_kind(str(mm)) is None
    assert source_kind("motionprompt/toy/weights/toy_model.safetensors").name == "toy"
    with pytest.raises(ValueError, match="never loaded") as exc:
        load_source(str(pickle))
    assert ".safetensors version" in str(exc.value) and "MotionPrompt tab" in str(exc.value)
    for argv in (["token-train", "--disc", "D.safetensors", "--model", str(ckpt), "--motion-adapter", str(pickle),
                  "--out", str(tmp_path / "t")],
                 ["generate", "--model", str(pickle), "--motion-adapter", str(mm), "--no-guidance",
                  "--out", str(tmp_path / "g")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "a pickle file (.ckpt/.pt/.pth/.bin) is never loaded" in err and "--config DIR" in err, err
    assert main(["generate", "--model", "tiny", "--motion-adapter", str(mm), "--no-guidance",
                 "--out", str(tmp_path / "g")]) == 2
    assert "tiny brings its own motion layers" in capsys.readouterr().err
    assert not (tmp_path / "t").exists() and not (tmp_path / "g").exists()  # refused before any work
