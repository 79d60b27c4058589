"""The tab's "Generated clips" (issue 25): AnimateDiff videos of the loaded model sampled into the generated-videos
folder, whole clips only, resumable; on the A1111 and Forge doubles."""

import csv

import numpy as np
import pytest
from PIL import Image

from .webui_host import WebUI

PROMPTS = ["a white fox running", "a red car driving left", "waves rolling on a beach"]


def _webui(tmp_path, flavour="a1111", **kw):
    ui = WebUI(tmp_path, flavour=flavour, **kw)
    from modules import scripts

    scripts.scripts_txt2img = ui.runner
    return ui


def _values(folder, prompts=PROMPTS, **kw):
    v = {"prompts_text": "\n".join(prompts), "per_prompt": 1, "first_seed": 5, "frames": 8, "width": 64, "height": 64,
         "steps": 2, "cfg_scale": 5.0, "sampler": "Euler", "motion_module": "mm_sd15_v2.ckpt", "folder": str(folder),
         **kw}
    return list(v.values())


@pytest.mark.parametrize("flavour", ["a1111", "forge"])
def test_clips_are_the_videos_txt2img_makes_written_whole_and_skipped_when_there(tmp_path, flavour):
    ui = _webui(tmp_path, flavour)
    from motionprompt.hosts.webui import clip_maker
    from motionprompt.training.clips import find_clips

    folder = tmp_path / "generated"
    *_, (text, gallery) = clip_maker.start(*_values(folder))
    assert "Done" in text and "3 clip(s) made" in text, text
    clips, skipped = find_clips([str(folder)])
    assert len(clips) == 3 and not skipped  # what the discriminator trainer will read
    name = clip_maker.clip_name(PROMPTS[1], 5)
    frames = sorted((folder / name).glob("*.png"))
    assert len(frames) == 8 and len(gallery) == 3
    assert not list(tmp_path.rglob("*.gif"))  # AnimateDiff's own GIFs went to a temporary folder
    # the frames are the video txt2img makes for this prompt and seed (AnimateDiff on, MotionPrompt off)
    _p, res = ui.generate({"enabled": False}, ad_args={"enable": True, "video_length": 8, "batch_size": 8},
                          prompt=PROMPTS[1], seed=5, steps=2, width=64, height=64, cfg_scale=5.0)
    expected = [(np.asarray(img.permute(1, 2, 0)) * 255 + 0.5).astype(np.uint8) for img in res.images]
    got = [np.asarray(Image.open(f)) for f in frames]
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    with open(folder / "clips.csv", newline="") as f:
        rows = {r["clip"]: r for r in csv.DictReader(f)}
    assert rows[name]["prompt"] == PROMPTS[1] and rows[name]["seed"] == "5" and len(rows) == 3
    assert rows[name]["motion_module"] == "mm_sd15_v2.ckpt"
    *_, (text, _g) = clip_maker.start(*_values(folder, prompts=[*PROMPTS, "a bird flying up"]))
    assert "1 clip(s) made, 3 already there, 4/4" in text, text  # resume: only the new prompt's clip
    assert not ui.errors


@pytest.mark.parametrize("flavour", ["a1111", "forge"])
def test_interrupt_keeps_whole_clips_only_and_make_goes_on(tmp_path, monkeypatch, flavour):
    _webui(tmp_path, flavour)
    from modules import processing, shared

    from motionprompt.hosts.webui import clip_maker

    folder = tmp_path / "generated"
    real = processing.process_images
    calls = []

    def interrupted_second(p):  # Interrupt pressed while the second clip samples
        calls.append(p.prompt)
        if len(calls) == 2:
            clip_maker.interrupt()
        return real(p)

    monkeypatch.setattr(processing, "process_images", interrupted_second)
    *_, (text, _g) = clip_maker.start(*_values(folder))
    assert "Interrupted" in text and "1 clip(s) made" in text, text
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [clip_maker.clip_name(PROMPTS[0], 5)]
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]  # no half-written clip
    assert shared.state.interrupted  # the WebUI's own interrupt stopped the clip being sampled
    monkeypatch.setattr(processing, "process_images", real)
    *_, (text, _g) = clip_maker.start(*_values(folder))
    assert "2 clip(s) made, 1 already there, 3/3" in text, text


def test_a_failing_clip_is_shown_and_the_clips_before_it_stay(tmp_path, monkeypatch):
    _webui(tmp_path)
    from modules import processing, shared

    from motionprompt.hosts.webui import clip_maker

    folder = tmp_path / "generated"
    real = processing.process_images
    calls = []

    def second_fails(p):
        calls.append(p.prompt)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(p)

    monkeypatch.setattr(processing, "process_images", second_fails)
    *_, (text, gallery) = clip_maker.start(*_values(folder))
    assert "Failed" in text and "CUDA out of memory (simulated)" in text and "1 clip(s) made" in text, text
    assert "Press Make to go on" in text and len(gallery) == 3  # the preview still shows the clip made
    kept = clip_maker.clip_name(PROMPTS[0], 5)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["clips.csv", kept])  # nothing half-written
    assert shared.state.job == ""  # the WebUI's job ended
    monkeypatch.setattr(processing, "process_images", real)
    *_, (text, _g) = clip_maker.start(*_values(folder))
    assert "2 clip(s) made, 1 already there, 3/3" in text, text


@pytest.mark.parametrize("missing", ["animatediff", "model"])
def test_without_animatediff_or_a_model_the_tab_says_so(tmp_path, missing):
    _webui(tmp_path, with_animatediff=missing != "animatediff")
    from modules import shared

    from motionprompt.hosts.webui import clip_maker

    if missing == "model":
        shared.sd_model = None
    *_, (text, gallery) = clip_maker.start(*_values(tmp_path / "generated"))
    words = "AnimateDiff is not installed" if missing == "animatediff" else "no Stable Diffusion checkpoint"
    assert "Failed" in text and words in text and "0 clip(s) made" in text and not gallery, text
    assert not (tmp_path / "generated").exists() or not any((tmp_path / "generated").iterdir())


def test_clip_section_refuses_bad_input_and_says_why(tmp_path):
    _webui(tmp_path)
    from motionprompt.hosts.webui import clip_maker

    (text, _g), = list(clip_maker.start(*_values(tmp_path, prompts=[])))
    assert "at least one prompt" in text
    (text, _g), = list(clip_maker.start(*_values(tmp_path, frames=1)))
    assert "2 frames" in text


def test_motion_modules_are_listed_as_animatediff_lists_them(tmp_path):
    _webui(tmp_path)
    from modules import shared

    from motionprompt.hosts.webui import animatediff

    folder = tmp_path / "mm"
    (folder / "more").mkdir(parents=True)
    for name in ("mm_sd15_v2.ckpt", "mm_sd15_v3.safetensors", "mm_sdxl_v10_beta.ckpt", ".gitkeep", "more/v2_lora.ckpt"):
        (folder / name).write_bytes(b"")
    shared.opts.data["animatediff_model_path"] = str(folder)
    found = animatediff.motion_modules()
    assert found == ["mm_sd15_v2.ckpt", "mm_sd15_v3.safetensors", "more/v2_lora.ckpt"]  # no SDXL, no .gitkeep
    assert animatediff.default_motion_module(found) == "mm_sd15_v3.safetensors"
    assert animatediff.default_motion_module(found[:1]) == "mm_sd15_v2.ckpt"
    shared.opts.data["animatediff_model_path"] = str(tmp_path / "none")
    assert animatediff.motion_modules() == [] and animatediff.default_motion_module([]) is None
