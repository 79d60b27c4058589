"""The tab's "Generated clips": AnimateDiff videos of the loaded checkpoint and motion module, sampled from a prompt
list into the generated-videos folder the discriminator learns against ("generated" = label 0).

Each clip is one txt2img job with AnimateDiff on (``txt2img.animatediff_txt2img``); our own AlwaysOn script hands
over the frames the user would get (``script.postprocess_batch``: the first ``video_length`` decoded frames, the
same as AnimateDiff keeps) and they are written losslessly as a frame folder (``files.video.save_frames``, atomic:
a clip is there whole or not at all), which ``train`` reads like a video. AnimateDiff's own GIF of the job goes
to a temporary folder. A clip's folder is named from its prompt and seed, so pressing Make again skips what is
done (resume), even after the prompt list was edited; ``clips.csv`` records prompt, seed and settings per clip.
"""

from __future__ import annotations

import csv
import html
import io
import re
import tempfile
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from . import worker

RECORD = "clips.csv"
RECORD_COLUMNS = ("clip", "prompt", "seed", "frames", "width", "height", "steps", "cfg_scale", "sampler", "model",
                  "motion_module")
SLOT = worker.Slot()  # the clips being made (one run at a time)


def clip_name(prompt: str, seed: int) -> str:
    """A clip's folder name: readable, and unique per (prompt, seed) whatever the prompt's position in the list."""
    slug = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:40] or "prompt"
    return f"{slug}-{zlib.crc32(prompt.encode()):08x}-{int(seed)}"


def default_folder() -> str:
    """Inside AnimateDiff's own output folder: the discriminator section's default "Generated videos" reads it."""
    from .paths import default_fake_dir

    return str(Path(default_fake_dir()) / "MotionPrompt")


@dataclass
class ClipJob:
    prompts: list
    per_prompt: int
    first_seed: int
    frames: int
    width: int
    height: int
    steps: int
    cfg_scale: float
    sampler: str
    folder: Path
    motion_module: str | None = None  # AnimateDiff's "model" (None: AnimateDiff's own default)
    stop: threading.Event = field(default_factory=threading.Event)
    total: int = 0
    existing: int = 0
    made: list = field(default_factory=list)  # folders written by this run
    status: str | None = None  # "done" / "stopped"
    error: str | None = None
    phase: str = "starting"

    def items(self) -> list[tuple[str, int]]:
        return [(prompt, self.first_seed + k) for prompt in self.prompts for k in range(self.per_prompt)]

    def run(self) -> None:
        """In the worker thread, under the WebUI's queue lock: one job per missing clip."""
        from modules import processing, shared
        from modules.call_queue import queue_lock

        from ...files.video import save_frames
        from .report import frames_from_images
        from .txt2img import animatediff_txt2img

        items = self.items()
        todo = [(prompt, seed) for prompt, seed in items if not (self.folder / clip_name(prompt, seed)).is_dir()]
        self.total, self.existing = len(items), len(items) - len(todo)
        self.status = "done"
        with queue_lock:
            shared.state.begin(job="motionprompt_clips")
            shared.state.job_count = len(todo)
            try:
                with tempfile.TemporaryDirectory(prefix="motionprompt_clips_") as scratch:
                    for n, (prompt, seed) in enumerate(todo):
                        if self.stop.is_set() or shared.state.interrupted:
                            self.status = "stopped"
                            break
                        shared.state.job_no = n
                        self.phase = f"clip {self.existing + n + 1}/{self.total}: {prompt} (seed {seed})"
                        shared.state.textinfo = f"MotionPrompt clips: {self.phase}"
                        p = animatediff_txt2img(prompt, seed, self.frames, self.width, self.height, self.steps,
                                                self.cfg_scale, scratch, sampler=self.sampler,
                                                motion_module=self.motion_module)
                        p.motionprompt_frames = []
                        processing.process_images(p)
                        if self.stop.is_set() or shared.state.interrupted:  # a clip cut short is not kept
                            self.status = "stopped"
                            break
                        if not p.motionprompt_frames:
                            raise RuntimeError("the job returned no video frames (is AnimateDiff working in txt2img?)")
                        frames = frames_from_images(p.motionprompt_frames[0])
                        if frames.shape[0] != self.frames:
                            raise RuntimeError(f"AnimateDiff returned {frames.shape[0]} frames for a "
                                               f"{self.frames}-frame video")
                        path = save_frames(frames, self.folder / clip_name(prompt, seed), "png")
                        self.made.append(path)
                        self._record(prompt, seed, getattr(shared.sd_model, "sd_checkpoint_info", None))
            except Exception as exc:  # shown in the tab; every clip written so far stays
                self.error = f"{type(exc).__name__}: {exc}"
            finally:
                shared.state.end()
        self.phase = "done"

    def _record(self, prompt: str, seed: int, ckpt) -> None:
        from ...files.atomic import write_text

        path = self.folder / RECORD
        rows = {}
        if path.exists():
            with open(path, newline="", encoding="utf-8") as f:
                rows = {r["clip"]: r for r in csv.DictReader(f)}
        name = clip_name(prompt, seed)
        rows[name] = {"clip": name, "prompt": prompt, "seed": seed, "frames": self.frames, "width": self.width,
                      "height": self.height, "steps": self.steps, "cfg_scale": self.cfg_scale, "sampler": self.sampler,
                      "model": getattr(ckpt, "name", None) or getattr(ckpt, "title", None) or "",
                      "motion_module": self.motion_module or ""}
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=RECORD_COLUMNS)
        w.writeheader()
        for row in rows.values():
            w.writerow(row)
        write_text(path, buf.getvalue())


# ------------------------------------------------------------------ the section
def _lines(text: str) -> list[str]:
    return list(dict.fromkeys(s.strip() for s in (text or "").splitlines() if s.strip() and not s.strip().startswith("#")))


def make_job(prompts_text, per_prompt, first_seed, frames, width, height, steps, cfg_scale, sampler, motion_module,
             folder) -> ClipJob:
    prompts = _lines(prompts_text)
    if not prompts:
        raise ValueError("give at least one prompt (one a line)")
    values = [int(per_prompt), int(frames), int(width), int(height), int(steps)]
    if min(values) < 1 or int(frames) < 2:
        raise ValueError("clips per prompt, size and steps must be >= 1, and a video needs >= 2 frames")
    if not (folder or "").strip():
        raise ValueError("give the folder the clips go to")
    return ClipJob(prompts, int(per_prompt), int(first_seed), int(frames), int(width), int(height), int(steps),
                   float(cfg_scale), str(sampler), Path(folder.strip()), motion_module or None)


def status_html(job: ClipJob) -> str:
    if job.status is None:
        return f"<p>{html.escape(job.phase)}</p>"
    head = "Failed" if job.error else {"done": "Done", "stopped": "Interrupted"}.get(job.status, job.status)
    error = f" <span class='motionprompt-error'><b>Stopped:</b> {html.escape(job.error)}</span>" if job.error else ""
    again = " Press Make to go on (finished clips are skipped)." if job.status == "stopped" or job.error else ""
    return (f"<p><b>{head}</b>: {len(job.made)} clip(s) made, {job.existing} already there, "
            f"{job.existing + len(job.made)}/{job.total} in {html.escape(str(job.folder))}.{error}{again}</p>")


def preview(job: ClipJob) -> list:
    """First, middle and last frame of the newest clip."""
    if not job.made:
        return []
    frames = sorted(Path(job.made[-1]).glob("*.png"))
    picks = [frames[0], frames[len(frames) // 2], frames[-1]] if frames else []
    return [str(f) for f in picks]


def start(*values):
    """Make button: a generator streaming (status, preview) until the worker ends."""
    try:
        job = make_job(*values)
    except (ValueError, TypeError) as exc:  # TypeError: a cleared number box sends None
        yield f"<p class='motionprompt-error'><b>Cannot start:</b> {html.escape(str(exc))}</p>", []
        return
    busy = "<p class='motionprompt-error'><b>Clips are already being made</b>; interrupt first.</p>", []
    yield from worker.stream(SLOT, job, job.run, lambda: (status_html(job), preview(job)), busy, "motionprompt-clips")


def interrupt() -> None:
    """After the current clip; the WebUI's interrupt stops that one too (it is then not kept)."""
    from modules import shared

    job = SLOT.job
    if job is not None:
        job.stop.set()
        shared.state.interrupt()


def sampler_names() -> list[str]:
    try:
        from modules import sd_samplers

        return list(sd_samplers.visible_sampler_names())
    except Exception:  # an older or stripped-down WebUI: the common names
        return ["Euler a", "Euler", "DPM++ 2M", "DDIM"]


def section(default_prompts: str):
    import gradio as gr

    from . import animatediff

    with gr.Row():
        with gr.Column():
            gr.HTML("<p><b>Generated clips</b>: AnimateDiff videos of the checkpoint and motion module loaded now, "
                    "the negatives the discriminator learns against (AnimateDiff is switched on for these jobs).</p>")
            prompts = gr.Textbox(label="Prompts (one a line)", lines=6, value=default_prompts,
                                 elem_id="motionprompt_clips_prompts")
            with gr.Row():
                per_prompt = gr.Number(value=1, precision=0, label="Clips per prompt", elem_id="motionprompt_clips_n")
                first_seed = gr.Number(value=0, precision=0, label="First seed", elem_id="motionprompt_clips_seed")
                frames = gr.Number(value=16, precision=0, label="Frames", elem_id="motionprompt_clips_frames")
                width = gr.Number(value=512, precision=0, label="Width", elem_id="motionprompt_clips_width")
                height = gr.Number(value=512, precision=0, label="Height", elem_id="motionprompt_clips_height")
            with gr.Row():
                steps = gr.Number(value=20, precision=0, label="Steps", elem_id="motionprompt_clips_steps")
                cfg_scale = gr.Number(value=7.5, label="CFG", elem_id="motionprompt_clips_cfg")
                names = sampler_names()
                sampler = gr.Dropdown(choices=names, value="Euler a" if "Euler a" in names else names[0],
                                      label="Sampler", elem_id="motionprompt_clips_sampler")
                modules = animatediff.motion_modules()
                motion_module = gr.Dropdown(choices=modules, value=animatediff.default_motion_module(modules),
                                            label="Motion module", elem_id="motionprompt_clips_motion_module",
                                            info="AnimateDiff's (its model folder)")
            folder = gr.Textbox(label="Folder (the discriminator's generated videos)", value=default_folder(),
                                elem_id="motionprompt_clips_folder")
            with gr.Row():
                make = gr.Button("Make clips", variant="primary", elem_id="motionprompt_clips_start")
                stop = gr.Button("Interrupt", elem_id="motionprompt_clips_interrupt")
        with gr.Column():
            status = gr.HTML(elem_id="motionprompt_clips_status")
            gallery = gr.Gallery(label="Newest clip: first, middle, last frame", elem_id="motionprompt_clips_preview")
    make.click(fn=start, inputs=[prompts, per_prompt, first_seed, frames, width, height, steps, cfg_scale, sampler,
                                 motion_module, folder], outputs=[status, gallery])
    stop.click(fn=interrupt, inputs=[], outputs=[])
