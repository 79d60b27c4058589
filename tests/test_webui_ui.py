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

    paths.models_path = str(tmp_path / "models")
    return tmp_path / "models" / "MotionPrompt"


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
    keys = [k for _c, k in info if isinstance(k, str)]  # enabled and discriminator paste through callables
    assert len(keys) == len(names) - 2 and all(k.startswith("MotionPrompt ") for k in keys)
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


def test_discriminator_list_and_refresh(ui_env):
    from motionprompt.hosts.webui import widgets

    assert widgets.list_discriminators() == []  # creates the folder
    (ui_env / "sub").mkdir()
    (ui_env / "b.safetensors").write_bytes(b"x")
    (ui_env / "sub" / "a.safetensors").write_bytes(b"x")
    (ui_env / ".b.safetensors.123.tmp").write_bytes(b"x")  # a save in progress is not offered
    (ui_env / "b.resume.safetensors").write_bytes(b"x")  # the trainer's resume state is not a discriminator
    assert widgets.list_discriminators() == ["b.safetensors", "sub/a.safetensors"]
    _b, controls, _ = _build("txt2img")
    assert controls[1].value == "b.safetensors"


def test_status_line_says_why_guidance_is_unavailable(ui_env, monkeypatch):
    from motionprompt.hosts.webui import widgets

    monkeypatch.delitem(sys.modules, "scripts.animatediff_mm", raising=False)
    assert "Install sd-webui-animatediff" in widgets.status_line()
    monkeypatch.setattr(widgets, "_is_forge", lambda: True)
    assert "unavailable on Forge" in widgets.status_line()
