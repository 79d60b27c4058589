"""The exported token file against A1111 1.10's embedding rules (the WebUI double's textual_inversion), our
metadata round trip, and our loader's refusals."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from motionprompt.amortized import token_file
from motionprompt.amortized.token_file import TokenFileError, load_token, save_token

from .webui_host import install_double

META = {"init_word": "authentic", "discriminator": {"name": "d.safetensors", "sha256": "ab" * 32},
        "flow": {"backend": "lk_pyramid", "size": 64, "iters": 4}, "data": {"prompts": 36, "steps": [4, 5, 6]},
        "training": {"updates": 300, "lr": 0.001}, "note": "123", "validation": {"d_last": 0.61, "d_init": None}}


@pytest.fixture
def a1111():
    install_double()
    from modules.textual_inversion import textual_inversion

    return textual_inversion


def test_export_is_one_float_tensor_a1111_loads_with_the_right_shape(tmp_path, a1111):
    vec = torch.randn(2, 768)
    path = save_token(tmp_path / "mp_walk.safetensors", vec, META)
    data = load_file(str(path), device="cpu")  # what A1111's load_from_file does with a .safetensors
    assert list(data) == [token_file.TENSOR_KEY] and data[token_file.TENSOR_KEY].dtype == torch.float32
    assert "string_to_param" not in data and not {"clip_l", "clip_g"} & set(data)  # the single-tensor branch
    emb = a1111.create_embedding_from_data(data, "mp_walk", filename=path.name, filepath=str(path))
    assert (emb.shape, emb.vectors) == (768, 2) and torch.equal(emb.vec, vec)
    back = load_token(path, width=768, n_tokens=2)
    assert torch.equal(back.vectors, vec) and back.name == "mp_walk" and back.ours
    assert {k: back.meta[k] for k in META} == META  # types survive: dicts, None, and the string "123"
    assert (back.meta["n_tokens"], back.meta["width"], back.meta["format_version"]) == (2, 768, 1)


def test_loader_refuses_what_a1111_refuses_and_says_why(tmp_path, a1111):
    two = tmp_path / "two.safetensors"
    save_file({"a": torch.zeros(1, 768), "b": torch.zeros(1, 768)}, str(two))
    with pytest.raises(AssertionError, match="multiple terms"):
        a1111.create_embedding_from_data(load_file(str(two)), "two")
    with pytest.raises(TokenFileError, match="exactly one tensor, this file has 2"):
        load_token(two)
    wide = save_token(tmp_path / "sd2.safetensors", torch.randn(1, 1024))
    with pytest.raises(TokenFileError, match=r"1024 wide \(SD2.x\).*takes 768 \(SD1.x\)"):
        load_token(wide, width=768)
    (tmp_path / "old.pt").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(TokenFileError, match="never opened"):
        load_token(tmp_path / "old.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"\x01" * 40)
    with pytest.raises(TokenFileError, match="not a readable safetensors"):
        load_token(tmp_path / "junk.safetensors")
    one_d = tmp_path / "community.safetensors"  # a foreign 1-D embedding: one vector, no metadata of ours
    save_file({"emb_params": torch.ones(768)}, str(one_d))
    tok = load_token(one_d, width=768)
    assert tok.vectors.shape == (1, 768) and not tok.ours and tok.meta == {}
    with pytest.raises(ValueError, match="without spaces"):
        save_token(tmp_path / "two words.safetensors", torch.zeros(1, 768))


def test_the_webui_loads_the_folder_like_a1111(tmp_path, a1111, monkeypatch):
    """A folder with our token, a wrong-width token and a non-embedding: the token registers under its file
    name, the other width is skipped (not an error), exactly as A1111 sorts them."""
    from .webui_double.model import DIM, ToySDModel

    install_double()
    model = ToySDModel(seed=0)
    save_token(tmp_path / "mp_walk.safetensors", torch.randn(1, DIM), META)
    save_token(tmp_path / "other_width.safetensors", torch.randn(1, DIM + 8))
    from modules import shared

    monkeypatch.setattr(shared, "sd_model", model)
    db = a1111.EmbeddingDatabase()
    db.add_embedding_dir(str(tmp_path))
    db.load_textual_inversion_embeddings()
    assert list(db.word_embeddings) == ["mp_walk"] and list(db.skipped_embeddings) == ["other_width"]
    ids = model.cond_stage_model.tokenize(["a fox mp_walk"])[0]
    assert db.find_embedding_at_position(ids, 2) == (db.word_embeddings["mp_walk"], 3)  # "mp", "_", "walk"
