"""The "MotionPrompt" tab: train a flow discriminator from folders of real and generated videos.

Training runs in a worker thread that holds the WebUI's ``queue_lock`` (so it never shares the GPU
with a generation) and reports through ``shared.state`` (so ``/sdapi/v1/progress`` and the console
see it); the Train button's handler is a generator that polls the worker and streams status, the
loss/accuracy plot and flow samples to the page — no JavaScript, so gradio 3.41 and 4.40 both work.
"""

from __future__ import annotations

import html
import threading
from dataclasses import dataclass, field
from pathlib import Path

from . import paths, worker
from .paths import default_fake_dir, default_prompts

FLOW_BACKENDS = ["lk_pyramid", "raft_small", "raft_large"]
_STOP = threading.Event()
SLOT = worker.Slot()  # one training run at a time


def output_path(name: str) -> Path:
    name = (name or "").strip() or "motion_disc.safetensors"
    if not name.endswith(".safetensors"):
        name += ".safetensors"
    path = Path(name)
    return path if path.is_absolute() else paths.models_dir() / path


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


@dataclass
class TrainJob:
    """One training run in a worker thread; ``view()`` is what the page shows at any moment."""

    cfg: object
    phase: str = "starting"
    step: int = 0
    total: int = 0
    eta: float | None = None
    losses: list = field(default_factory=list)  # (step, loss)
    vals: list = field(default_factory=list)  # (step, acc, auc)
    samples: list = field(default_factory=list)  # (rgb, caption)
    data: dict | None = None  # the data summary (clips counted, samples, the validation split) once flows are ready
    result: object = None
    error: str | None = None

    def run(self) -> None:
        from modules import shared
        from modules.call_queue import queue_lock

        from ...flow.registry import FlowWeightsMissing
        from ...training.dataset import DataError
        from ...training.trainer import TrainError, train_discriminator

        def show_samples(data) -> None:
            self.data = dict(data.summary)
            self.samples = flow_samples(data)

        with queue_lock:
            try:
                shared.state.begin(job="motionprompt_train")
                self.result = train_discriminator(self.cfg, self._progress, self._interrupted, on_data=show_samples)
            except (TrainError, DataError, FlowWeightsMissing, ValueError) as exc:
                self.error = str(exc)
            except Exception as exc:  # shown in the tab, never a dead worker thread
                self.error = f"{type(exc).__name__}: {exc}"
            finally:
                shared.state.end()
        self.phase = "done"

    def _interrupted(self) -> bool:
        from modules import shared

        return _STOP.is_set() or bool(shared.state.interrupted)

    def _progress(self, step: int, total: int, metrics: dict, eta) -> None:
        from modules import shared

        self.phase = metrics.get("phase", "train")
        self.step, self.total, self.eta = step, total, eta
        if self.phase == "train" and "loss" in metrics:
            self.losses.append((step, float(metrics["loss"])))
        measured = metrics.get("val_step")
        if metrics.get("val_acc") is not None and (not self.vals or self.vals[-1][0] != measured):
            self.vals.append((measured, float(metrics["val_acc"]), metrics.get("val_auc")))
        shared.state.job_count, shared.state.job_no = total, step
        shared.state.textinfo = f"MotionPrompt {self.phase}: {step}/{total}"

    def view(self):
        return status_html(self), loss_plot(self), list(self.samples), skipped_text(self)


def status_html(job: TrainJob) -> str:
    data = getattr(job.result, "data", None) or job.data
    return _status_line(job) + (data_html(data) if data else "")


def data_html(summary: dict) -> str:
    """What the run counted and how it split it: clips per side, training and validation samples per source,
    and which clips went to validation (clip-level split: their pairs never train D)."""
    def sources(counts: dict) -> str:
        total = sum(counts.values())
        parts = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
        return f"{total} ({parts})" if parts else "0"

    val = list(summary.get("val_clips") or [])
    clips = summary.get("real_clips", 0) + summary.get("generated_clips", 0)
    names = html.escape(", ".join(val)) or "none"
    notes = "".join(f"<br>{html.escape(n)}" for n in summary.get("notes") or [])
    return (f"<p>Data: {summary.get('real_clips', 0)} real clip(s), {summary.get('generated_clips', 0)} generated "
            f"clip(s); training samples {sources(summary.get('train_samples') or {})}, validation samples "
            f"{sources(summary.get('val_samples') or {})}.{notes}</p>"
            f"<details><summary>Validation clips: {len(val)} of {clips}</summary><p>{names}</p></details>")


def _status_line(job: TrainJob) -> str:
    if job.error:
        return f"<p class='motionprompt-error'><b>Training failed:</b> {html.escape(job.error)}</p>"
    r = job.result
    if r is not None:
        m = r.metrics or {}
        if r.checkpoint is None:
            return ("<p><b>Interrupted</b> before the first training step; nothing was saved. The flows computed "
                    "so far are cached: press Train to go on.</p>")
        head = "Interrupted" if r.interrupted else "Done"
        acc = f", validation accuracy {m['acc']:.3f}" if m.get("acc") is not None else ""
        acc += f", ROC AUC {m['auc']:.3f}" if acc and m.get("auc") is not None and m["auc"] == m["auc"] else ""
        resume = " Tick <i>Resume</i> and press Train to continue." if r.interrupted else ""
        return (f"<p><b>{head}</b> at step {r.step}/{r.total_steps}{acc}; {r.seconds:.0f} s training, "
                f"{r.flow_seconds:.0f} s flows. Saved {html.escape(str(r.checkpoint))}; pick it in txt2img after "
                f"🔄.{resume}</p>")
    if job.phase == "done":
        return "<p><b>Stopped</b> without a result.</p>"
    eta = f", about {job.eta:.0f} s left" if job.eta else ""
    what = {"flow": "computing flows (cached for the next runs)", "train": "training"}.get(job.phase, job.phase)
    return f"<p>{what}: {job.step}/{job.total}{eta}</p>"


def skipped_text(job: TrainJob) -> str:
    """Files that could not be used, one a line; a video's other copies (AnimateDiff's GIF beside its frame
    folder) are expected and only counted, in one last line."""
    from ...training.clips import skip_lines

    return "\n".join(skip_lines(getattr(job.result, "skipped", None) or [])) or "(none)"


def loss_plot(job: TrainJob):
    if not job.losses and not job.vals:
        return None
    from ...files.plots import pyplot

    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 3))
    if job.losses:
        ax.plot(*zip(*job.losses, strict=True), label="train BCE", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if job.vals:
        ax2 = ax.twinx()
        steps, acc, _auc = zip(*job.vals, strict=True)
        ax2.plot(steps, acc, "o-", color="tab:green", label="val accuracy")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("accuracy")
    fig.tight_layout()
    plt.close(fig)
    return fig


def flow_samples(data, per_side: int = 4) -> list:
    """Colour-wheel pictures of a few real and negative training flows, drawn on one common scale."""
    from ...flow.colours import flow_to_rgb

    real = (data.labels == 1).nonzero().squeeze(1)[:per_side]
    fake = (data.labels == 0).nonzero().squeeze(1)[:per_side]
    picked = [(int(i), "real") for i in real] + [(int(i), data.source_names[int(data.source[int(i)])]) for i in fake]
    if not picked:
        return []
    flows = data.flows[[i for i, _ in picked]].float()
    scale = float(flows.norm(dim=1).amax()) or 1.0
    return [(flow_to_rgb(flows[k], scale), caption) for k, (_i, caption) in enumerate(picked)]


def start_training(real, fake, synthetic, out_name, backend, size, iters, arch, steps, batch, lr, gap_min, gap_max,
                   val_fraction, seed, resume, overwrite):
    """Train button: a generator streaming (status, plot, samples, skipped) until the worker ends."""
    from modules import devices

    from ...flow.settings import FlowSettings
    from ...training.trainer import TrainConfig, TrainError

    try:
        cfg = TrainConfig(
            real=_lines(real), fake=_lines(fake), synthetic=list(synthetic or []), out=str(output_path(out_name)),
            flow=FlowSettings(backend, int(size), int(iters)), flow_weights=[str(d) for d in paths.flow_weights_dirs()],
            allow_download=paths.allow_download(), arch=arch, steps=int(steps), batch=int(batch), lr=float(lr),
            gap_min=int(gap_min), gap_max=int(gap_max), val_fraction=float(val_fraction), seed=int(seed),
            device=str(devices.device), resume=bool(resume), overwrite=bool(overwrite),
        ).validate()
    except (TrainError, ValueError, TypeError) as exc:  # TypeError: a cleared number box sends None
        yield f"<p class='motionprompt-error'><b>Cannot start:</b> {html.escape(str(exc))}</p>", None, [], ""
        return
    busy = "<p class='motionprompt-error'><b>A training run is already going</b>; interrupt it first.</p>", None, [], ""
    job = TrainJob(cfg)
    yield from worker.stream(SLOT, job, job.run, job.view, busy, "motionprompt-train", before=_STOP.clear)


def interrupt_training() -> None:
    _STOP.set()


def on_ui_tabs():
    """The tab, one section after the other, as the walkthrough goes: generated clips, the discriminator, the motion
    token, its export."""
    import gradio as gr

    from . import clip_maker, token_export
    from .token_tab import section as token_section

    with gr.Blocks(analytics_enabled=False) as tab:
        clip_maker.section(default_prompts())
        discriminator_section()
        token_section()
        token_export.section()
    return [(tab, "MotionPrompt", "motionprompt_train")]


def discriminator_section():
    """Real footage against generated videos and/or synthetic corruptions: the flow discriminator."""
    import gradio as gr

    from ...disc.models import ARCHITECTURES
    from ...training.corruptions import CORRUPTIONS

    gr.HTML("<p><b>Discriminator</b>: train the flow discriminator MotionPrompt steers with: real footage against "
            "AnimateDiff's own videos (the clips made above among them) and/or synthetic temporal corruptions of the "
            "real clips.</p>")
    with gr.Row():
        with gr.Column():
            real = gr.Textbox(label="Real videos", lines=2, elem_id="motionprompt_train_real",
                              info="folders (one per line) of real videos or frame folders; searched recursively")
            fake = gr.Textbox(label="Generated videos", lines=2, value=default_fake_dir(),
                              elem_id="motionprompt_train_fake",
                              info="AnimateDiff outputs of your model (searched recursively: the generated clips' "
                                   "folder is inside); may be empty")
            synthetic = gr.CheckboxGroup(choices=list(CORRUPTIONS), value=list(CORRUPTIONS),
                                         label="Synthetic negatives", elem_id="motionprompt_train_synthetic")
            out_name = gr.Textbox(label="Output file (in models/MotionPrompt)", value="motion_disc.safetensors",
                                  elem_id="motionprompt_train_out")
            with gr.Row():
                backend = gr.Dropdown(choices=FLOW_BACKENDS, value="lk_pyramid", label="Flow",
                                      elem_id="motionprompt_train_flow",
                                      info="the flow guidance will use; lk_pyramid needs no weights")
                size = gr.Slider(32, 512, value=128, step=8, label="Flow resolution",
                                 elem_id="motionprompt_train_flow_size")
                iters = gr.Slider(1, 32, value=6, step=1, label="Flow iterations",
                                  elem_id="motionprompt_train_flow_iters")
            with gr.Row():
                arch = gr.Dropdown(choices=sorted(ARCHITECTURES), value="cnn", label="Architecture",
                                   elem_id="motionprompt_train_arch")
                steps = gr.Number(value=2000, label="Steps", precision=0, elem_id="motionprompt_train_steps")
                batch = gr.Number(value=32, label="Batch", precision=0, elem_id="motionprompt_train_batch")
                lr = gr.Number(value=3e-4, label="Learning rate", elem_id="motionprompt_train_lr")
            with gr.Row():
                gap_min = gr.Slider(1, 8, value=1, step=1, label="Min frame gap", elem_id="motionprompt_train_gap_min")
                gap_max = gr.Slider(1, 15, value=4, step=1, label="Max frame gap", elem_id="motionprompt_train_gap_max")
                val_fraction = gr.Slider(0.0, 0.5, value=0.2, step=0.05, label="Validation share",
                                         elem_id="motionprompt_train_val")
                seed = gr.Number(value=0, label="Seed", precision=0, elem_id="motionprompt_train_seed")
            with gr.Row():
                resume = gr.Checkbox(value=False, label="Resume", elem_id="motionprompt_train_resume")
                overwrite = gr.Checkbox(value=False, label="Overwrite", elem_id="motionprompt_train_overwrite")
            with gr.Row():
                train = gr.Button("Train", variant="primary", elem_id="motionprompt_train_start")
                stop = gr.Button("Interrupt", elem_id="motionprompt_train_interrupt")
        with gr.Column():
            status = gr.HTML(elem_id="motionprompt_train_status")
            plot = gr.Plot(label="Loss and validation accuracy", elem_id="motionprompt_train_plot")
            gallery = gr.Gallery(label="Flow samples (colour wheel: hue = direction, saturation = speed)",
                                 elem_id="motionprompt_train_samples")
            skipped = gr.Textbox(label="Skipped files", lines=4, elem_id="motionprompt_train_skipped")
    inputs = [real, fake, synthetic, out_name, backend, size, iters, arch, steps, batch, lr, gap_min, gap_max,
              val_fraction, seed, resume, overwrite]
    train.click(fn=start_training, inputs=inputs, outputs=[status, plot, gallery, skipped])
    stop.click(fn=interrupt_training, inputs=[], outputs=[])
