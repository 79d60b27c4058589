"""The tab's motion-token step: ``token-train``'s trainer on the loaded checkpoint and AnimateDiff motion module.

AnimateDiff's motion module is in the UNet only while AnimateDiff samples, so the run happens inside one short
"carrier" generation (``txt2img.animatediff_txt2img``: Euler, 2 steps, its GIF into a temporary folder). In its
first CFG callback where AnimateDiff is hooked (step 1: it hooks its UNet at step 0, maybe after our callback) the
whole training runs through ``token_backend.WebUITokenBackend`` — the per-sample mode's encoders, host and x0 predictor — and
the carrier then finishes its last step. Everything the trainer writes (state, log, token) goes to
``<models>/MotionPrompt/tokens/<name>/``; an interrupted run is saved there and goes on with *Resume*.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...amortized import token_file
from ...amortized.inputs import read_prompts
from . import paths

log = logging.getLogger("motionprompt")

_JOBS: list[TokenJob] = []  # jobs whose carrier is being sampled
CARRIER_STEPS = 2


def token_dir(name: str) -> Path:
    """A token run's folder: state, log, prompts and the token, named by the token."""
    return paths.tokens_dir() / token_file.check_name(name)


@dataclass
class TokenJob:
    """One training run; ``cfg`` is a ``TokenTrainConfig`` whose ``out``/``prompts`` the tab has set."""

    cfg: object
    disc_path: Path
    frames: int
    size: int
    level: str = "auto"
    overwrite: bool = False
    motion_module: str | None = None  # AnimateDiff's "model" for the carrier (None: AnimateDiff's own default)
    stop: threading.Event = field(default_factory=threading.Event)
    phase: str = "starting"
    step: int = 0
    total: int = 0
    rows: list = field(default_factory=list)  # the trainer's log rows (update, loss, d_score, val_d ...)
    baseline: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)
    status: str | None = None  # "done" / "stopped"
    error: str | None = None
    token: Path | None = None
    exported: Path | None = None  # the copy in embeddings/ (token_tab exports a finished token)
    seconds: float = 0.0
    p: object = None
    _started: bool = False

    # ------------------------------------------------------------------ the worker
    def run(self) -> None:
        """In the tab's worker thread, under the WebUI's queue lock: the carrier generation (training inside)."""
        from modules import processing

        from .txt2img import animatediff_txt2img

        prompts = read_prompts(self.cfg.prompts)
        with tempfile.TemporaryDirectory(prefix="motionprompt_carrier_") as scratch:  # AnimateDiff's GIF of it
            self.p = animatediff_txt2img(prompts[0], max(self.cfg.seed_base, 0), self.frames, self.size, self.size,
                                         CARRIER_STEPS, self.cfg.cfg_scale, scratch, sampler="Euler",
                                         motion_module=self.motion_module)
            _JOBS.append(self)
            try:
                processing.process_images(self.p)
            finally:
                if self in _JOBS:
                    _JOBS.remove(self)
        if not self._started and self.error is None:
            self.error = ("AnimateDiff did not sample the carrier clip as a video (is its motion module available "
                          "and AnimateDiff enabled for txt2img?)")

    # ------------------------------------------------------------------ inside the carrier
    def inside(self, params) -> None:
        from modules import devices, shared

        from ...amortized.train import TokenTrainer, TokenTrainError
        from ...disc.checkpoint import load_discriminator
        from . import animatediff, run
        from .token_backend import WebUITokenBackend, kept_step

        self._started = True
        self.phase = "sampling training latents"
        ad = animatediff.state()
        path = run.sampling_path(self.p.sd_model)
        if ad is None or not path.injected(params, ad):
            self.error = "AnimateDiff is not active in the carrier generation"
            return
        cfg = self.cfg
        cfg.model_id = model_id(self.p.sd_model, ad)
        cfg.device = str(devices.device)
        try:
            with torch.inference_mode(False), kept_step(ad):
                gcfg = cfg.guidance_config()
                backend = WebUITokenBackend(params, self.p, path, ad, gcfg.n_tokens, cfg.sampling_steps, cfg.cfg_scale,
                                            self.level, shared.state,
                                            info={"kind": "webui", "webui": path.label, "model": cfg.model_id})
                backend.on_clip = self._sampled
                disc = load_discriminator(self.disc_path, devices.device)
                trainer = TokenTrainer(cfg, disc=disc, backend=backend, log=self._log, overwrite=self.overwrite)
                self.step, self.total = trainer.step, cfg.steps
                self.rows = list(trainer.history)
                self.status = trainer.run(stop=self._stopped, progress=self._progress)
                self.baseline = dict(trainer.baseline)
                self.seconds = trainer.seconds
                self.token = Path(cfg.out) / f"{cfg.name}{token_file.SUFFIX}"
                self.messages += backend.notes()
        except InterruptedError as exc:  # while sampling the latents: nothing to save yet, the next run starts over
            self.status = "stopped"
            self.messages.append(str(exc))
        except (TokenTrainError, ValueError, OSError) as exc:
            self.error = str(exc)
        except Exception as exc:  # shown in the tab; the carrier still finishes
            log.exception("MotionPrompt token training failed")
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.phase = "done"

    def _sampled(self, done: int, total: int) -> None:
        from modules import shared

        self.phase = f"sampling the training latents: clip {done}/{total}"
        shared.state.textinfo = f"MotionPrompt token: {self.phase}"

    def _stopped(self) -> bool:
        from modules import shared

        return self.stop.is_set() or bool(shared.state.interrupted)

    def _progress(self, step: int, total: int, row: dict) -> None:
        from modules import shared

        self.phase = "training"
        self.step, self.total = step, total
        self.rows.append(dict(row))
        shared.state.sampling_step, shared.state.sampling_steps = step, total
        shared.state.textinfo = f"MotionPrompt token: update {step}/{total}"

    def _log(self, message: str) -> None:
        log.info("MotionPrompt token: %s", message)
        self.messages.append(message)
        if message.startswith("held-out D score"):
            self.phase = "training"


def model_id(sd_model, ad) -> str:
    """The checkpoint and motion module a token is trained for (resume refuses another pair)."""
    info = getattr(sd_model, "sd_checkpoint_info", None)
    ckpt = getattr(info, "name", None) or getattr(info, "title", None) or type(sd_model).__name__
    return f"{ckpt} + {getattr(ad.params, 'model', '?')}"


def on_cfg_denoiser(params) -> None:
    """Registered once; runs a job whose carrier is being sampled, at its first step after AnimateDiff hooked."""
    den = getattr(params, "denoiser", None)
    p = getattr(den, "p", None)
    for job in _JOBS:
        if job.p is p and not job._started and getattr(den, "step", 0) >= 1:
            job.inside(params)
            return
