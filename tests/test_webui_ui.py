"""The accordion built with whatever gradio is installed: 3.41.2 in the main suite, 4.40.0 in CI's second
venv (`.ci/run`). Needs only gradio and the host double's UI modules — no torch — so it runs there with
``--noconftest``."""

import sys
from pathlib import Path

import pytest

DOUBLE = Path(__file__).resolve().parent / "webui_double"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ui_env(tmp_path):
    for p in (str(DOUBLE), str(ROOT)):
        if p not in sys.path:
            sys.path.insert(0, p)
    from modules import paths

    from motionprompt.hosts.webui import token_export

    paths.models_path = str(tmp_path / "models")
    recorded = dict(token_export.DROPDOWNS)  # the accordions built here are not the test host's
    yield tmp_path / "models" / "MotionPrompt"
    token_export.DROPDOWNS.clear()
    token_export.DROPDOWNS.update(recorded)


def _build(tab):
    import gradio as gr

    from motionprompt.hosts.webui import ui, widgets

    with gr.Blocks() as blocks:
        controls, infotext = ui.build(tab, widgets.list_discriminators, widgets.refresh_button, widgets.accordion,
                                      widgets.status_line())
    return blocks, controls, infotext


def test_accordion_controls_follow_the_args_order_with_unique_ids(ui_env):
    from motionprompt.hosts.webui.args import MotionPromptArgs

    _b, txt, info = _build("txt2img")
    _b, img, _ = _build("img2img")
    names = MotionPromptArgs.field_names()
    assert len(txt) == len(img) == len(names)
    ids = [c.elem_id for c in txt + img]
    assert len(set(ids)) == len(ids) and all(i.startswith(("txt2img_", "img2img_")) for i in ids)
    values = [c.value for c in txt]
    args = MotionPromptArgs.from_script_args(values)  # the UI's defaults are a valid, disabled run
    assert args.enabled is False and args.preset == "paper" and args.flow_backend is None and args.seed == -1
    assert args.inner_iters is None and args.window_start is None  # equal to the preset's: they follow it
    cfg = args.engine_config(0, None)[0]
    assert (cfg.inner_iters, cfg.window_start, cfg.every_k) == (3, 0.16, 1)
    keys = [k for _c, k in info if isinstance(k, str)]  # enabled, discriminator and token paste through callables
    assert len(keys) == len(names) - 3 and all(k.startswith("MotionPrompt ") for k in keys)
    assert [c for c, _k in info] == txt  # every control is restored by a paste


def test_preset_radio_rewrites_the_advanced_controls(ui_env):
    from motionprompt.hosts.webui import ui

    fast = ui.preset_values("fast")
    paper = ui.preset_values("paper")
    assert fast["inner_iters"] == 1 and fast["every_k"] == 2
    # flow always follows the discriminator (flow_policy): no preset touches it
    assert fast["flow_size"] == paper["flow_size"] == 0 and fast["flow_backend"] == paper["flow_backend"]
    assert paper["inner_iters"] == 3
    assert set(fast) == set(ui.CONTROLS)


def test_preset_rewrite_fires_on_user_input_only(ui_env):
    """``.change`` also fires when a pasted infotext sets the radio and would overwrite the pasted values."""
    blocks, controls, _info = _build("txt2img")
    preset = next(c for c in controls if c.elem_id == "txt2img_motionprompt_preset")
    found = []
    for dep in blocks.config["dependencies"]:
        targets = dep.get("targets", [])
        if "trigger" in dep:  # gradio 3.41: targets = [ids], trigger = event name
            found += [dep["trigger"] for t in targets if t == preset._id]
        else:  # gradio 4.x: targets = [(id, event)]
            found += [event for t, event in targets if t == preset._id]
    assert found == ["input"]


def _safetensors(path, meta: dict | None = None) -> bytes:
    """A valid safetensors file written by hand (the gradio-4 venv has neither torch nor safetensors)."""
    import json
    import struct

    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                         **({"__metadata__": meta} if meta else {})}).encode()
    data = struct.pack("<Q", len(header)) + header + bytes(8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


DISC_META = {"format": "motionprompt.discriminator"}


def _fn_writing(blocks, component):
    """The event handlers whose only output is ``component`` (gradio 3.41: a list of fns; 4.x: a dict)."""
    fns = blocks.fns.values() if isinstance(blocks.fns, dict) else blocks.fns
    return [f for f in fns if list(f.outputs) == [component]]


def test_discriminator_list_and_refresh(ui_env):
    from motionprompt.hosts.webui import widgets

    assert widgets.list_discriminators() == []  # creates the folder
    real = _safetensors(ui_env / "b.safetensors", DISC_META)
    _safetensors(ui_env / "sub" / "a.safetensors", DISC_META)
    (ui_env / ".b.safetensors.123.tmp").write_bytes(real)  # a save in progress is not offered
    _safetensors(ui_env / "b.resume.safetensors", DISC_META)  # the trainer's resume state is not a discriminator
    _safetensors(ui_env / "lora.safetensors", {"ss_network_module": "networks.lora"})  # another tool's file
    assert widgets.list_discriminators() == ["b.safetensors", "sub/a.safetensors"]
    _b, controls, _ = _build("txt2img")
    assert controls[1].value == "b.safetensors"


def test_discriminator_list_reads_the_header_and_leaves_out_corrupt_files(ui_env):
    """Issue 26: 4 KiB of random bytes named bad.safetensors, or a real file cut short, are not discriminators."""
    import random

    from motionprompt.hosts.webui import widgets

    good = _safetensors(ui_env / "good.safetensors", DISC_META)
    (ui_env / "bad.safetensors").write_bytes(random.Random(0).randbytes(4096))
    (ui_env / "cut.safetensors").write_bytes(good[:-3])  # a copy that stopped early
    (ui_env / "padded.safetensors").write_bytes(good + b"junk")
    (ui_env / "empty.safetensors").write_bytes(b"")
    assert widgets.list_discriminators() == ["good.safetensors"]


def test_refresh_picks_a_new_file_and_keeps_a_pick_that_is_still_there(ui_env, tmp_path, monkeypatch):
    """Issue 26: the Token dropdown stayed empty after its 🔄 found a token. Both dropdowns now keep the user's
    pick while its file exists, and otherwise select the only/newest file (the discriminator: the last used)."""
    import os

    from modules import shared

    from motionprompt.hosts.webui import token_ui, widgets

    emb = tmp_path / "embeddings"
    monkeypatch.setattr(shared.cmd_opts, "embeddings_dir", str(emb), raising=False)
    blocks, controls, _ = _build("txt2img")
    disc, token = controls[1], next(c for c in controls if c.elem_id == "txt2img_motionprompt_token")
    assert disc.value is None and token.value is None  # nothing to pick yet
    (refresh_token,) = _fn_writing(blocks, token)
    (refresh_disc,) = _fn_writing(blocks, disc)
    token_meta = {"format": "motionprompt.token", "format_version": "1", "name": "mp_walk"}
    _safetensors(emb / "mp_walk.safetensors", token_meta)
    assert token_ui.list_tokens() == ["mp_walk.safetensors"]
    update = refresh_token.fn(None)
    assert update["value"] == "mp_walk.safetensors" and list(update["choices"]) == ["mp_walk.safetensors"], update
    _safetensors(emb / "mp_run.safetensors", {**token_meta, "name": "mp_run"})
    os.utime(emb / "mp_walk.safetensors", ns=(1, 1))  # mp_run is the newest
    assert refresh_token.fn("mp_walk.safetensors")["value"] == "mp_walk.safetensors"  # the pick stays
    assert refresh_token.fn(None)["value"] == "mp_run.safetensors"
    assert refresh_token.fn("deleted.safetensors")["value"] == "mp_run.safetensors"
    _safetensors(ui_env / "new.safetensors", DISC_META)
    assert refresh_disc.fn(None)["value"] == "new.safetensors"
    assert widgets.refreshed("x", ["x", "y"], lambda c: "y") == "x" and widgets.refreshed("z", [], lambda c: None) is None


def test_status_line_says_why_guidance_is_unavailable(ui_env, monkeypatch):
    from motionprompt.hosts.webui import widgets

    monkeypatch.delitem(sys.modules, "scripts.animatediff_mm", raising=False)
    assert "Install sd-webui-animatediff" in widgets.status_line()
    monkeypatch.setattr(widgets, "_is_forge", lambda: True)
    assert "unavailable on Forge" in widgets.status_line()


def test_export_updates_the_token_lists_of_both_accordions_built_before_the_tab(ui_env, tmp_path, monkeypatch):
    """A1111 builds txt2img and img2img (each with the accordion) before the extension tabs, then renders every
    interface into one page (``ui.create_ui``): the tab's Export event, run through gradio itself, updates both
    accordions' token lists."""
    import asyncio

    import gradio as gr
    from modules import shared

    from motionprompt.hosts.webui import token_export

    emb = tmp_path / "embeddings"
    monkeypatch.setattr(shared.cmd_opts, "embeddings_dir", str(emb), raising=False)
    monkeypatch.setattr(token_export, "DROPDOWNS", {})
    meta = {"format": "motionprompt.token", "format_version": "1", "name": "walk"}
    _safetensors(ui_env / "tokens" / "walk" / "walk.safetensors", meta)
    interfaces = [_build("txt2img")[0], _build("img2img")[0]]
    with gr.Blocks() as tab:
        token_export.section()
    with gr.Blocks() as demo:
        for interface in [*interfaces, tab]:
            interface.render()
    lists = [token_export.DROPDOWNS[t]._id for t in ("txt2img", "img2img")]
    config = demo.get_config_file()
    ids = {c["props"].get("elem_id"): c["id"] for c in config["components"]}
    assert ids["motionprompt_export_src"] and lists[0] in ids.values() and lists[1] in ids.values()
    button = ids["motionprompt_export_start"]
    (index, dep), = [(d.get("id", i), d) for i, d in enumerate(config["dependencies"])  # 4.x: targets (id, event)
                     if any((t[0] if isinstance(t, list | tuple) else t) == button for t in d["targets"])]
    assert dep["outputs"] == [ids["motionprompt_export_status"], *lists]

    def export(src, name):  # export_token itself needs torch; the event around it does not
        path = emb / f"{name}.safetensors"
        _safetensors(path, {**meta, "name": name})
        return path

    monkeypatch.setattr(token_export, "export_token", export)
    try:
        from gradio.state_holder import SessionState

        state = SessionState(demo)
    except ImportError:  # gradio 3.41: a dict
        state = {}
    out = asyncio.run(demo.process_api(index, ["walk/walk.safetensors", "mp_walk"], state))
    status, *updates = out["data"]
    assert "Exported" in status and "<code>mp_walk</code>" in status, status
    assert len(updates) == 2
    for update in updates:
        choices = [c[0] if isinstance(c, list | tuple) else c for c in update["choices"]]  # 4.x: (name, value)
        assert choices == ["mp_walk.safetensors"] and update["value"] == "mp_walk.safetensors", update
