"""The tab's "Export token" (issue 25 d): a token file into the WebUI's embeddings folder under a chosen name, the
embedding database reloaded so the typed name works at once, the accordion's token lists refreshed; on the A1111
and Forge doubles, whose ``model_hijack.embedding_db`` is textual_inversion's database over ``--embeddings-dir``."""

import os

import pytest
import torch
from safetensors.torch import save_file

from motionprompt.amortized import token_file

from .webui_double.model import DIM
from .webui_host import WebUI

META = {"init_word": "authentic", "training": {"updates": 300}, "discriminator": {"name": "d.safetensors"}}


def _trained(tmp_path, name="walk", seed=0):
    """A token as the token section leaves it: models/MotionPrompt/tokens/<name>/<name>.safetensors beside its state."""
    folder = tmp_path / "models" / "MotionPrompt" / "tokens" / name
    torch.manual_seed(seed)
    path = token_file.save_token(folder / f"{name}.safetensors", torch.randn(2, DIM), META)
    save_file({"tokens": torch.zeros(2, DIM)}, str(folder / "state.safetensors"))  # the run's state: not a token
    return path


def _cond(ui, prompt):
    with torch.no_grad():
        return ui.sd_model.get_learned_conditioning([prompt])


@pytest.mark.parametrize("flavour", ["a1111", "forge"])
def test_export_puts_the_token_into_embeddings_and_the_name_works_at_once(tmp_path, flavour):
    ui = WebUI(tmp_path, flavour=flavour)
    from modules import sd_hijack

    from motionprompt.hosts.webui import token_export

    src = _trained(tmp_path)
    assert token_export.trained_tokens() == ["walk/walk.safetensors"]  # the state file is left out
    pick = token_export.newest_trained(token_export.trained_tokens())
    assert token_export.name_for(pick) == "walk"
    before = _cond(ui, "a fox mp_walk")
    status, *updates = token_export.export_clicked(pick, "mp_walk")
    assert "Exported" in status and "<code>mp_walk</code>" in status and "has loaded it" in status, status
    dest = tmp_path / "embeddings" / "mp_walk.safetensors"
    back = token_file.load_token(dest)
    assert torch.equal(back.vectors, token_file.load_token(src).vectors) and back.name == "mp_walk"
    assert {k: back.meta[k] for k in META} == META  # the training record travels in the header
    db = sd_hijack.model_hijack.embedding_db
    assert list(db.word_embeddings) == ["mp_walk"]  # forced reload: no generation needed
    after = _cond(ui, "a fox mp_walk")  # the typed name now brings the token's vectors
    assert not torch.equal(before, after)
    ids = ui.sd_model.cond_stage_model.tokenize(["a fox mp_walk"])[0]
    assert db.find_embedding_at_position(ids, 2)[0] is db.word_embeddings["mp_walk"]
    assert len(updates) == len(token_export.DROPDOWNS) == 1  # the double builds the txt2img accordion only
    assert updates[0]["choices"] == ["mp_walk.safetensors"] and updates[0]["value"] == "mp_walk.safetensors"
    # a generation reloads only when the folder changed (upstream's rule): the exported name stays loaded
    ui.generate({"enabled": False}, prompt="a fox mp_walk", steps=2)
    assert "mp_walk" in db.word_embeddings and not ui.errors


def test_without_the_forced_reload_the_name_waits_for_the_next_generation(tmp_path, monkeypatch):
    """Why the export forces the reload: the WebUI itself re-reads the folder only when a generation starts."""
    ui = WebUI(tmp_path)
    from modules import sd_hijack

    from motionprompt.hosts.webui import token_export

    (tmp_path / "embeddings").mkdir()
    ui.generate({"enabled": False}, steps=2)  # a first generation has read the (empty) folder
    monkeypatch.setattr(token_export, "reload_embeddings", lambda: False)
    token_export.export_token(_trained(tmp_path), "later")
    db = sd_hijack.model_hijack.embedding_db
    assert "later" not in db.word_embeddings
    os.utime(tmp_path / "embeddings", (1e10, 1e10))  # the folder's mtime moved on (coarse clocks: same tick)
    ui.generate({"enabled": False}, steps=2)
    assert "later" in db.word_embeddings


def test_export_refuses_what_it_cannot_do_and_keeps_the_lists(tmp_path):
    WebUI(tmp_path)
    from motionprompt.hosts.webui import token_export

    src = _trained(tmp_path)
    emb = tmp_path / "embeddings"
    emb.mkdir()
    save_file({"emb_params": torch.ones(1, DIM)}, str(emb / "style.safetensors"))  # someone's own embedding
    cases = [("", "x", "pick a token file"), ("gone/gone.safetensors", "x", "not found"),
             (str(src), "two words", "without spaces"), (str(src), "style", "another embedding"),
             ("walk/state.safetensors", "x", "not a MotionPrompt token")]
    for pick, name, words in cases:
        status, *updates = token_export.export_clicked(pick, name)
        assert "Cannot export" in status and words in status, (pick, name, status)
        assert all("choices" not in u for u in updates)  # the accordion lists are left as they are
    assert torch.equal(token_file.load_token(emb / "style.safetensors").vectors, torch.ones(1, DIM))  # untouched
    status, *_ = token_export.export_clicked(str(src), "")  # an absolute path; no name: the file's own
    assert (emb / "walk.safetensors").is_file(), status
    newer = _trained(tmp_path, "run", seed=1)
    os.utime(newer, (1e10, 1e10))
    assert token_export.newest_trained(token_export.trained_tokens()) == "run/run.safetensors"


def test_a_token_of_another_width_is_exported_and_the_status_says_the_webui_skipped_it(tmp_path):
    WebUI(tmp_path)
    from motionprompt.hosts.webui import token_export

    wide = token_file.save_token(tmp_path / "wide.safetensors", torch.randn(1, DIM + 8), META)
    status, *_ = token_export.export_clicked(str(wide), "wide")
    assert "skipped it" in status and f"{DIM + 8} wide" in status and f"takes {DIM}" in status, status


def test_the_tab_builds_its_sections_in_order_and_export_refreshes_the_accordion(tmp_path):
    WebUI(tmp_path)
    from modules import script_callbacks

    from motionprompt.hosts.webui import token_export

    (tab, _title, _elem), = script_callbacks.ui_tabs_callback()
    config = tab.get_config_file()
    ids = [c["props"].get("elem_id") for c in config["components"] if c["props"].get("elem_id")]
    firsts = [next(i for i, e in enumerate(ids) if e.startswith(prefix)) for prefix in
              ("motionprompt_clips_", "motionprompt_train_", "motionprompt_token_", "motionprompt_export_")]
    assert firsts == sorted(firsts)  # clips, discriminator, token, export
    by_elem = {c["props"].get("elem_id"): c["id"] for c in config["components"]}
    button = by_elem["motionprompt_export_start"]
    dep, = [d for d in config["dependencies"] if button in d["targets"] or [button, "click"] in d["targets"]]
    dropdowns = [d._id for d in token_export.DROPDOWNS.values()]
    assert dep["outputs"] == [by_elem["motionprompt_export_status"], *dropdowns] and dropdowns
