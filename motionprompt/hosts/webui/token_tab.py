"""The tab's "Motion token" section: train the amortized token on the loaded checkpoint + motion module.

Like the discriminator's section: a worker thread under the WebUI's queue lock (never beside a generation),
``shared.state`` for the progress bar, a generator handler streaming status and the loss/validation plot, an
Interrupt that saves (tick *Resume* to go on). The training itself is ``token_job.TokenJob``.
"""

from __future__ import annotations

import html
from pathlib import Path

from ...engine.config import MEMORY_MODES
from . import paths, widgets, worker
from .paths import default_prompts

SLOT = worker.Slot()  # the token run (one at a time; Interrupt sets its stop event)
MEMORY_PATHS = list(reversed(MEMORY_MODES[1:]))  # the memory paths (engine.memory_plan), lowest first: the default


def _lines(text: str) -> list[str]:
    return list(dict.fromkeys(s.strip() for s in (text or "").splitlines() if s.strip() and not s.strip().startswith("#")))


def make_job(disc_name, motion_module, name, prompts_text, seeds, val_fraction, steps, batch, lr, sampling_steps,
             cfg_scale, frames, size, memory, refresh_every, seed, resume, overwrite):
    """A ``TokenJob`` from the section's values, or ValueError saying what to change. The prompts are written into
    the run's folder when it starts; resuming with other prompts is refused (they are part of the run)."""
    from ...amortized.config import TokenTrainConfig
    from .token_job import TokenJob, token_dir

    if not disc_name:
        raise ValueError(f"pick a discriminator (train one above, or put a .safetensors file in {paths.models_dir()})")
    disc = paths.resolve_discriminator(disc_name)
    if not disc.is_file():
        raise ValueError(f"discriminator {disc} not found (🔄 refreshes the list)")
    prompts = _lines(prompts_text)
    if len(prompts) < 2:
        raise ValueError("give at least two prompts (one a line): some are held out for validation")
    out = token_dir((name or "").strip())
    state = out / "state.safetensors"
    prompts_file = out / "prompts.txt"
    if state.exists() and not overwrite:
        if not resume:
            raise ValueError(f"{out} holds a run: tick Resume to continue it or Overwrite to start over")
        saved = _lines(prompts_file.read_text(encoding="utf-8")) if prompts_file.exists() else []
        if saved != prompts:
            raise ValueError("the prompts differ from the saved run's: restore them, or tick Overwrite to start over")
    cfg = TokenTrainConfig(
        disc=str(disc), out=str(out), name=out.name, model="webui", prompts=str(prompts_file), val_fraction=float(val_fraction),
        seeds=int(seeds), val_seeds=max(1, int(seeds) // 2), sampling_steps=int(sampling_steps), cfg_scale=float(cfg_scale),
        frames=int(frames), size=int(size), guidance={"lr": float(lr)}, steps=int(steps), batch=int(batch),
        refresh_every=int(refresh_every), seed=int(seed), seed_base=int(seed), memory=str(memory),
        flow_weights=[str(d) for d in paths.flow_weights_dirs()], allow_download=paths.allow_download())
    cfg.validate()
    if not state.exists() or overwrite:
        from ...files.atomic import write_text

        write_text(prompts_file, "\n".join(prompts) + "\n")
    return TokenJob(cfg, disc, frames=int(frames), size=int(size), overwrite=bool(overwrite),
                    motion_module=motion_module or None)


def run_job(job, export: bool = True) -> None:
    """The worker: the job under the queue lock, then (done) the token exported into ``embeddings/``."""
    from modules import shared
    from modules.call_queue import queue_lock

    with queue_lock:
        shared.state.begin(job="motionprompt_token")
        try:
            job.run()
        except Exception as exc:  # shown in the tab, never a dead worker thread
            job.error = job.error or f"{type(exc).__name__}: {exc}"
        finally:
            shared.state.end()
    if export and job.status == "done" and job.error is None:
        try:
            from .token_export import export_token

            job.exported = export_token(job.token, job.cfg.name)
        except (OSError, ValueError) as exc:
            job.error = f"trained, but the export failed: {exc}"


def start(*values):
    """Train button: a generator streaming (status, plot, job) until the worker ends (job: None before it starts)."""
    try:
        job = make_job(*values)
    except (ValueError, TypeError, OSError) as exc:  # TypeError: a cleared number box sends None
        yield f"<p class='motionprompt-error'><b>Cannot start:</b> {html.escape(str(exc))}</p>", None, None
        return
    busy = "<p class='motionprompt-error'><b>A token run is already going</b>; interrupt it first.</p>", None, None
    yield from worker.stream(SLOT, job, lambda: run_job(job), lambda: (status_html(job), plot(job), job), busy,
                             "motionprompt-token")


def interrupt() -> None:
    """After the current update (saved); while the latents are sampled, at once (the WebUI's interrupt)."""
    from modules import shared

    job = SLOT.job
    if job is not None:
        job.stop.set()
        shared.state.interrupt()


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def status_html(job) -> str:
    if job.error:
        kept = (f" The {job.rows[-1]['step']} finished update(s) are saved: tick <i>Resume</i> to continue."
                if job.rows else "")
        return f"<p class='motionprompt-error'><b>Token training failed:</b> {html.escape(job.error)}.{kept}</p>"
    rows = job.rows
    last = rows[-1] if rows else {}
    vals = [r for r in rows if r.get("val_d") is not None]
    base = job.baseline
    held = (f" Held-out D: prompt alone {_f(base.get('d_plain'))}, with the init word {_f(base.get('d_init'))}, "
            f"with the token {_f(vals[-1]['val_d'])} (update {vals[-1]['step']}).") if vals and base else ""
    notes = "".join(f"<br><small>{html.escape(m)}</small>" for m in job.messages[-3:])
    if job.status is None:
        now = f"update {job.step}/{job.total}, loss {last['loss']:.4f}" if last else job.phase
        return f"<p>{html.escape(now)}</p>{notes}"
    if job.status == "stopped" and not job.rows:
        return ("<p><b>Interrupted</b> before the first update; nothing was saved. Press <i>Train token</i> to start "
                f"again.</p>{notes}")
    head = "Done" if job.status == "done" else "Interrupted"
    resume = " Tick <i>Resume</i> and press Train to continue." if job.status == "stopped" else ""
    where = getattr(job, "exported", None)
    use = (f" Exported to {html.escape(str(where))}: type <code>{html.escape(Path(where).stem)}</code> in a prompt, or "
           "pick it in the accordion (Mode: amortized).") if where else f" Token: {html.escape(str(job.token))}."
    return (f"<p><b>{head}</b> at update {job.step}/{job.cfg.steps}, {job.seconds / 60:.1f} min.{held}{use}{resume}"
            f"</p>{notes}")


def plot(job):
    """Training loss per update and the held-out D score at each validation (with the two references)."""
    if not job.rows:
        return None
    from ...files.plots import pyplot

    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([r["step"] for r in job.rows], [r["loss"] for r in job.rows], lw=1, label="loss")
    ax.set_xlabel("update")
    ax.set_ylabel("loss")
    vals = [(r["step"], r["val_d"]) for r in job.rows if r.get("val_d") is not None]
    if vals:
        ax2 = ax.twinx()
        ax2.plot(*zip(*vals, strict=True), "o-", color="tab:green", label="held-out D")
        for key, style in (("d_plain", ":"), ("d_init", "--")):
            if job.baseline.get(key) is not None:
                ax2.axhline(job.baseline[key], color="tab:gray", ls=style, lw=1)
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("held-out D (dotted: prompt alone)")
    fig.tight_layout()
    plt.close(fig)
    return fig


def section():
    """The section's controls inside the tab's Blocks. Train streams status and plot and, once the token is
    exported, refreshes the accordion's token lists (txt2img, img2img: built before extension tabs)."""
    import gradio as gr

    from . import animatediff
    from .token_export import DROPDOWNS, dropdown_updates

    with gr.Row():
        with gr.Column():
            gr.HTML("<p><b>Motion token</b>: learn once, on the checkpoint and AnimateDiff motion module loaded now, "
                    "a token that makes motion more real to the discriminator; then type its name in a prompt (no "
                    "sampling cost). Runs through AnimateDiff: enable nothing, it is switched on for this job.</p>")
            with gr.Row():
                choices = widgets.list_discriminators()
                disc = gr.Dropdown(choices=choices, value=widgets.newest(choices, paths.models_dir()),
                                   label="Discriminator", elem_id="motionprompt_token_disc")
                widgets.refresh_keeping(disc, widgets.list_discriminators,
                                        lambda c: widgets.newest(c, paths.models_dir()), "motionprompt_token_disc_refresh")
                modules = animatediff.motion_modules()
                motion_module = gr.Dropdown(choices=modules, value=animatediff.default_motion_module(modules),
                                            label="Motion module", elem_id="motionprompt_token_motion_module",
                                            info="AnimateDiff's; the token is trained for it and this checkpoint")
                name = gr.Textbox(label="Token name (the prompt word)", value="motionprompt",
                                  elem_id="motionprompt_token_name")
            prompts = gr.Textbox(label="Prompts (one a line; a share is held out for validation)", lines=6,
                                 value=default_prompts(), elem_id="motionprompt_token_prompts")
            with gr.Row():
                seeds = gr.Number(value=4, precision=0, label="Seeds per prompt", elem_id="motionprompt_token_seeds")
                val_fraction = gr.Slider(0.05, 0.5, value=0.15, step=0.05, label="Held out",
                                         elem_id="motionprompt_token_val")
                steps = gr.Number(value=300, precision=0, label="Updates", elem_id="motionprompt_token_steps")
                batch = gr.Number(value=4, precision=0, label="Batch", elem_id="motionprompt_token_batch")
                lr = gr.Number(value=1e-3, label="Learning rate", elem_id="motionprompt_token_lr")
            with gr.Row():
                sampling_steps = gr.Number(value=25, precision=0, label="Sampling steps",
                                           elem_id="motionprompt_token_sampling_steps")
                cfg_scale = gr.Number(value=7.5, label="CFG", elem_id="motionprompt_token_cfg")
                frames = gr.Number(value=16, precision=0, label="Frames", elem_id="motionprompt_token_frames")
                size = gr.Number(value=512, precision=0, label="Size", elem_id="motionprompt_token_size")
                memory = gr.Dropdown(choices=MEMORY_PATHS, value="low", label="Memory",
                                     elem_id="motionprompt_token_memory",
                                     info="low: UNet, motion module and VAE decoder recomputed in the backward")
            with gr.Row():
                refresh_every = gr.Number(value=0, precision=0, label="Resample with the token every N updates",
                                          elem_id="motionprompt_token_refresh")
                seed = gr.Number(value=0, precision=0, label="Seed", elem_id="motionprompt_token_seed")
                resume = gr.Checkbox(value=False, label="Resume", elem_id="motionprompt_token_resume")
                overwrite = gr.Checkbox(value=False, label="Overwrite", elem_id="motionprompt_token_overwrite")
            with gr.Row():
                train = gr.Button("Train token", variant="primary", elem_id="motionprompt_token_start")
                stop = gr.Button("Interrupt", elem_id="motionprompt_token_interrupt")
        with gr.Column():
            status = gr.HTML(elem_id="motionprompt_token_status")
            chart = gr.Plot(label="Loss and held-out D", elem_id="motionprompt_token_plot")
    inputs = [disc, motion_module, name, prompts, seeds, val_fraction, steps, batch, lr, sampling_steps, cfg_scale, frames, size,
              memory, refresh_every, seed, resume, overwrite]
    dropdowns = list(DROPDOWNS.values())

    def train_and_refresh(*values):
        for text, fig, job in start(*values):
            exported = getattr(job, "exported", None)
            refresh = dropdown_updates(Path(exported).name) if exported else [gr.update() for _ in dropdowns]
            yield (text, fig, *refresh)

    train.click(fn=train_and_refresh, inputs=inputs, outputs=[status, chart, *dropdowns])
    stop.click(fn=interrupt, inputs=[], outputs=[])
