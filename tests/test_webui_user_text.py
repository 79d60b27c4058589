"""What the WebUI side tells the user is what happens (issue 26): the D change in the result line, the amortized
infotext and its TI hash, console lines that name MotionPrompt once, and README's lists of keys and axes."""

import io
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from motionprompt.amortized.token_file import file_sha256, save_token

from .webui_double.model import DIM
from .webui_host import WebUI, install_double, save_disc

ROOT = Path(__file__).resolve().parents[1]
AD = {"enable": True, "video_length": 8, "batch_size": 8}
NAME = "mp_walk"
AMORTIZED = {"enabled": True, "mode": "amortized", "token": f"{NAME}.safetensors"}


@pytest.fixture
def webui(tmp_path, monkeypatch):
    ui = WebUI(tmp_path)
    save_disc(tmp_path / "models")
    from modules import shared

    folder = tmp_path / "embeddings"
    monkeypatch.setattr(shared.cmd_opts, "embeddings_dir", str(folder), raising=False)
    torch.manual_seed(7)
    ui.token = save_token(folder / f"{NAME}.safetensors", torch.randn(1, DIM), {"init_word": "authentic"})
    return ui


def _pasted_args(webui, infotext: str):
    """The args the accordion holds after "Read generation parameters" on ``infotext``, from the UI's defaults.
    The paste fields are the controls in args order (``ui.build``)."""
    from modules import infotext_utils

    from motionprompt.hosts.webui.args import MotionPromptArgs

    defaults = webui.ui_defaults()[webui.mp.args_from:webui.mp.args_to]  # (re)builds the controls: read them after
    fields = webui.mp.infotext_fields
    updates = infotext_utils.paste(fields, {"MotionPrompt": infotext, "Steps": "8"}, infotext)
    return MotionPromptArgs.from_script_args([u.get("value", d) for u, d in zip(updates, defaults, strict=True)])


# ---------------------------------------------------------------- item 4: the D change never reads as null
def test_the_d_change_is_printed_with_the_digits_it_needs():
    """Issue 26: a run that moved D by 3e-5 read "0.109->0.109 (+0.0000)"."""
    from motionprompt.hosts.webui.outcome import d_change_text

    text = d_change_text(0.10912, 0.109152, 9, 11)
    assert text == "0.109120->0.109152 (+0.000032; higher after 9 of 11 steps)", text
    assert d_change_text(0.412, 0.455, 10, 11) == "0.412->0.455 (+0.043; higher after 10 of 11 steps)"
    assert d_change_text(0.5, 0.49, 0, 1) == "0.500->0.490 (-0.010; higher after 0 of 1 step)"
    assert "-1.0e-10" in d_change_text(0.5, 0.5 - 1e-10, 0, 2)  # never a row of zeros
    assert "(no change;" in d_change_text(0.25, 0.25, 0, 2)


# ---------------------------------------------------------------- item 5: the amortized infotext
def test_amortized_infotext_lists_what_the_mode_uses_and_pastes_back(webui):
    from motionprompt.hosts.webui.args import MotionPromptArgs

    p, _ = webui.generate({**AMORTIZED, "preset": "fast", "lr": 0.5, "seed": 3}, AD)
    assert p.extra_generation_params["MotionPrompt"] == f"mode: amortized, token: {NAME}.safetensors"
    assert "amortized token" in p.extra_generation_params["MotionPrompt result"]
    args = MotionPromptArgs.from_dict({**AMORTIZED, "discriminator": "disc.safetensors", "flow_size": 48})
    text = args.to_infotext()  # a discriminator measures the clip, at the flow size asked for
    assert text == f"discriminator: disc.safetensors, flow_size: 48, mode: amortized, token: {NAME}.safetensors", text
    for original in (args, MotionPromptArgs.from_dict(AMORTIZED)):
        back = _pasted_args(webui, original.to_infotext())  # the token dropdown started empty: it takes it still
        assert (back.mode, back.token, back.flow_size) == (original.mode, original.token, original.flow_size)
        assert back.to_infotext() == original.to_infotext()
    assert _pasted_args(webui, "preset: fast").discriminator == "disc.safetensors"  # per-sample: the pick stays
    hybrid = MotionPromptArgs.from_dict({**AMORTIZED, "mode": "hybrid", "discriminator": "disc.safetensors"})
    assert hybrid.to_infotext() == (f"discriminator: disc.safetensors, preset: paper, token_level: input, mode: hybrid, "
                                    f"token: {NAME}.safetensors")  # the inner loop's tokens: input level (a file)
    per_sample = MotionPromptArgs.from_dict({"enabled": True, "discriminator": "", "lambda_tv": 0.25})
    assert per_sample.to_infotext() == "preset: paper, lambda_tv: 0.25"  # no empty "discriminator: "


def test_amortized_infotext_has_the_ti_hash_typing_the_name_writes(webui):
    """A1111 (sd_hijack_clip.py) writes ``TI hashes: "name: <first 12 hex digits of the file's SHA-256>"`` for a
    typed embedding; the amortized token is the same embedding, so the infotext names it the same way."""
    from modules import shared

    from motionprompt.amortized.token_file import load_token
    from motionprompt.hosts.webui.amortized import AmortizedRun
    from motionprompt.hosts.webui.args import MotionPromptArgs

    short = file_sha256(webui.token)[:12]
    p, _ = webui.generate(AMORTIZED, AD)
    assert p.extra_generation_params["TI hashes"] == f"{NAME}: {short}"
    p, _ = webui.generate({**AMORTIZED, "token": "missing.safetensors"}, AD)
    assert "TI hashes" not in p.extra_generation_params  # not applied: no embedding in the picture

    job = SimpleNamespace(extra_generation_params={"TI hashes": "other: 0123456789ab"})  # a typed embedding's entry
    run = AmortizedRun(job, MotionPromptArgs.from_dict(AMORTIZED), load_token(webui.token, width=DIM))
    run._add_ti_hash()
    run._add_ti_hash()  # a second batch of the same job adds nothing
    assert job.extra_generation_params["TI hashes"] == f"{NAME}: {short}, other: 0123456789ab"
    shared.opts.data["textual_inversion_add_hashes_to_infotext"] = False  # A1111's setting
    p, _ = webui.generate(AMORTIZED, AD)
    assert "TI hashes" not in p.extra_generation_params


# ---------------------------------------------------------------- item 8: the console says MotionPrompt once
def test_console_lines_name_motionprompt_once(webui, capsys):
    """Issue 26: ``WARNING:motionprompt:MotionPrompt: not applied: MotionPrompt discriminator …``. With a root
    handler configured as ``logging.basicConfig`` does, our lines still name the extension once."""
    root = logging.getLogger()
    caught = io.StringIO()
    handler = logging.StreamHandler(caught)
    handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    root.addHandler(handler)
    try:
        p, _ = webui.generate({"enabled": True, "discriminator": "nope.safetensors"}, AD)
    finally:
        root.removeHandler(handler)
    result = p.extra_generation_params["MotionPrompt result"]
    assert result.startswith("not applied: discriminator ") and "file not found" in result, result
    assert "put discriminators (.safetensors) there" in result  # the WebUI says where its dropdown looks
    lines = [line for line in capsys.readouterr().err.splitlines() if "not applied" in line]
    assert lines == [f"MotionPrompt: {result}"], lines  # one speaker's prefix; the message does not repeat it
    assert "motionprompt" not in caught.getvalue().lower()  # not printed a second time by the root handler
    install_double()
    from motionprompt.hosts.webui import integration, logs

    integration.register()  # a UI reload registers again: still one handler
    assert sum(getattr(h, logs._MARK, False) for h in logging.getLogger("motionprompt").handlers) == 1


# ---------------------------------------------------------------- items 8, 16: README's lists are the product's
def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_api_keys_are_the_args_fields():
    from motionprompt.hosts.webui.args import MotionPromptArgs

    found = re.search(r"Keys: `([^`]+)`", _readme())
    assert found, "README lost its API 'Keys:' list"
    assert [k.strip() for k in found[1].split(",")] == MotionPromptArgs.field_names()


def test_readme_xyz_axes_are_the_registered_ones():
    install_double()
    from motionprompt.hosts.webui.integration import XYZ_AXES

    found = re.search(r"The XYZ plot gets\s+`([^`]+)`\s+axes", _readme())
    assert found, "README lost its XYZ axis list"
    listed = [a.strip() for a in re.sub(r"\s+", " ", found[1]).removeprefix("[MotionPrompt] ").split(" / ")]
    assert listed == [label for label, _field, _kind in XYZ_AXES]


def test_readme_describes_the_training_tab_as_built():
    """README said "presets, Start/Interrupt"; the tab has no preset control and its button says Train."""
    import gradio as gr

    install_double()
    from motionprompt.hosts.webui import train_tab

    text = re.sub(r"\s+", " ", _readme())
    found = re.search(r"In the WebUI the \*\*MotionPrompt\*\* tab does the same: ([^.]+)\.", text)
    assert found, "README lost its sentence on the training tab"
    sentence = found[1]
    ((tab, _title, _id),) = train_tab.on_ui_tabs()
    blocks = tab.blocks.values()
    def section(prefix):  # the tab's sections by their elem_ids: the discriminator's, the motion token's
        return [b.value for b in blocks if isinstance(b, gr.Button) and (b.elem_id or "").startswith(prefix)]

    buttons = section("motionprompt_train_")
    assert buttons and all(f"*{label}*" in sentence for label in buttons), (buttons, sentence)
    walkthrough = text[text.index("### Making a motion token in the WebUI"):]
    token_buttons = [label for label in section("motionprompt_token_") + section("motionprompt_clips_")
                     + section("motionprompt_export_") if label != "🔄"]
    token_buttons += ["Resume"]
    assert {"Train token", "Export token"} <= set(token_buttons) and all(f"*{label}*" in walkthrough for label in token_buttons), token_buttons
    labels = " ".join(str(getattr(b, "label", "") or "") for b in blocks).lower()
    assert ("preset" in sentence.lower()) == ("preset" in labels), sentence
