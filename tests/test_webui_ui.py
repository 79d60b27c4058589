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

    from motionprompt.webui import ui, widgets

    with gr.Blocks() as blocks:
        controls, infotext = ui.build(tab, widgets.list_discriminators, widgets.refresh_button, widgets.accordion,
                                      widgets.status_line())
    return blocks, controls, infotext


def test_accordion_controls_follow_the_args_order_with_unique_ids(ui_env):
    from motionprompt.webui.args import MotionPromptArgs

    _b, txt, info = _build("txt2img")
    _b, img, _ = _build("img2img")
    names = MotionPromptArgs.field_names()
    assert len(txt) == len(img) == len(names)
    ids = [c.elem_id for c in txt + img]
    assert len(set(ids)) == len(ids) and all(i.startswith(("txt2img_", "img2img_")) for i in ids)
    values = [c.value for c in txt]
    args = MotionPromptArgs.from_script_args(values)  # the UI's defaults are a valid, disabled run
    assert args.enabled is False and args.preset == "paper" and args.inner_iters == 3
    assert args.window_start == 0.16 and args.flow_backend is None and args.seed == -1
    keys = [k for _c, k in info if isinstance(k, str)]
    assert len(keys) == len(names) - 1 and all(k.startswith("MotionPrompt ") for k in keys)


def test_preset_radio_rewrites_the_advanced_controls(ui_env):
    from motionprompt.webui import ui

    fast = ui.preset_values("fast")
    paper = ui.preset_values("paper")
    assert fast["inner_iters"] == 1 and fast["every_k"] == 2 and fast["flow_size"] == 128
    assert paper["inner_iters"] == 3 and paper["flow_size"] == 0  # 0 = the discriminator's own resolution
    assert set(fast) == set(ui.CONTROLS)


def test_discriminator_list_and_refresh(ui_env):
    from motionprompt.webui import widgets

    assert widgets.list_discriminators() == []  # creates the folder
    (ui_env / "sub").mkdir()
    (ui_env / "b.safetensors").write_bytes(b"x")
    (ui_env / "sub" / "a.safetensors").write_bytes(b"x")
    (ui_env / ".b.safetensors.123.tmp").write_bytes(b"x")  # a save in progress is not offered
    assert widgets.list_discriminators() == ["b.safetensors", "sub/a.safetensors"]
    _b, controls, _ = _build("txt2img")
    assert controls[1].value == "b.safetensors"


def test_status_line_says_why_guidance_is_unavailable(ui_env, monkeypatch):
    from motionprompt.webui import widgets

    monkeypatch.delitem(sys.modules, "scripts.animatediff_mm", raising=False)
    assert "Install sd-webui-animatediff" in widgets.status_line()
    monkeypatch.setattr(widgets, "_is_forge", lambda: True)
    assert "unavailable on Forge" in widgets.status_line()
