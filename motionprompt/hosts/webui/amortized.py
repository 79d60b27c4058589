"""The accordion's "amortized" mode: a trained token file appended to the prompt at every sampling step,
with no inner loop, no gradient and no discriminator (the hybrid mode is a ``GuidedRun`` whose tokens start
from the file: ``MotionPromptArgs.engine_config``).

The token enters exactly where guidance puts its tokens and where textual inversion puts an embedding: as
a ``PromptChunkFix`` right after the prompt, through CLIP (``tokens.InputLevelEncoder``), so the conditioning
is the one the WebUI builds when the token's name is typed at the end of the prompt. On early-2024 Forge and
reForge the CLIP is loaded through Forge's memory manager for that, as Forge's own encode does, and the
sampling models again afterwards (``forge.ForgePath``). It is written into the
CFG callback's ``text_cond`` at every step, cooperating with AnimateDiff in either callback order
(``injection.CondInjection``).

Registered with ``register()`` (its own CFG callback, the Mode/Token XYZ axes, unload cleanup). Nothing here
raises into the host: a problem is reported once and sampling continues with the user's own prompt.
"""

from __future__ import annotations

import logging

import torch

from ...amortized.token_file import TokenFile, TokenFileError, file_sha256, load_token
from . import animatediff, embeddings, flavour
from . import run as runs
from .args import INFOTEXT_KEY, MotionPromptArgs
from .injection import CondInjection
from .outcome import Costs, clock, cost_text
from .tokens import TokenBudgetError, build_encoder

log = logging.getLogger("motionprompt")

_RUNS: list[AmortizedRun] = []
TI_HASHES = "TI hashes"  # A1111's infotext key for the embeddings a prompt used (sd_hijack_clip.py)
#: the setting that measures a finished clip (integration.on_ui_settings), as the Settings tab shows it
MEASURE_SETTING = "Settings > MotionPrompt > Measure guided clips"


class AmortizedUnavailable(Exception):
    pass


def host_problem(p) -> str | None:
    sd_model = p.sd_model
    family = flavour.kind(sd_model)
    if flavour.problem(family):  # Forge 2 / an unknown Forge: the Forge path below does not hold there
        return f"{flavour.problem(family)}; type the token's name in the prompt instead"
    if getattr(sd_model, "is_sdxl", False) or getattr(sd_model, "is_sdxl_inpaint", False):
        return "SDXL models are not supported (tokens are trained for one text encoder)"
    from modules import script_callbacks

    if "denoiser" not in script_callbacks.CFGDenoiserParams.__init__.__code__.co_varnames:
        return "this WebUI is older than 1.8 (its CFG callback has no denoiser); update A1111"
    return None


def start(p, args: MotionPromptArgs) -> AmortizedRun | None:
    """Called from ``Script.process`` for mode "amortized". Returns the run, or None after saying why not."""
    t0 = clock()  # the job's time starts here (outcome.Costs)
    p.extra_generation_params[INFOTEXT_KEY] = args.to_infotext()
    try:
        problem = host_problem(p)
        if problem:
            raise AmortizedUnavailable(problem)
        if not args.token:
            raise AmortizedUnavailable(f"no token selected; train one (python -m motionprompt token-train) and put "
                                       f"it in {embeddings.embeddings_dir()}")
        clip = p.sd_model.cond_stage_model
        width = int(clip.encode_embedding_init_text(",", 1).shape[-1])  # what A1111 checks embeddings against
        token = load_token(embeddings.resolve_token(args.token), width=width)
    except (AmortizedUnavailable, TokenFileError, OSError) as exc:
        runs.report(p, f"not applied: {exc}")
        return None
    run = AmortizedRun(p, args, token)
    run.costs = Costs(t0, sync=False)  # its callback queues no GPU work worth waiting for at every step
    run.costs.setup = clock() - t0
    _RUNS.append(run)
    return run


def on_cfg_denoiser(params) -> None:
    p = getattr(getattr(params, "denoiser", None), "p", None)
    for run in _RUNS:
        if run.p is p:
            run.on_denoiser(params)
            return


def clear() -> None:
    for run in list(_RUNS):
        run.finish()


def register() -> None:
    from modules import script_callbacks

    try:
        script_callbacks.on_cfg_denoiser(on_cfg_denoiser, name="motionprompt_amortized")
    except TypeError:  # A1111 < 1.9 has no callback names
        script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
    script_callbacks.on_script_unloaded(clear)


class AmortizedRun:
    def __init__(self, p, args: MotionPromptArgs, token: TokenFile):
        self.p, self.args, self.token = p, args, token
        self.costs = Costs()  # what the result line's time figure comes from (``start`` gives it the job's start)
        self.problem: str | None = None
        self.notes: list[str] = []
        self.steps = 0  # UNet evaluations that got the token
        self._denoiser = None
        self._rows: torch.Tensor | None = None  # prompt + token per latent row
        self._post: torch.Tensor | None = None  # ... after AnimateDiff's per-frame interpolation
        self._injection = CondInjection()

    # ------------------------------------------------------------------ per batch
    def begin_batch(self, seeds=None) -> None:
        self.problem, self.notes, self.steps = None, [], 0
        self._denoiser, self._rows, self._post = None, None, None
        self.costs.begin()

    def end_batch(self, images=None) -> str:
        self._restore(None)
        self.costs.stop()
        metrics = self._measure(images) if self.steps and not self.problem else None  # the result line says its cost
        text = self.result_text()
        runs.report(self.p, text)
        if self.steps and not self.problem:
            self._add_ti_hash()
        if metrics is not None:
            from .report import METRICS_KEY, metrics_text

            self.p.extra_generation_params[METRICS_KEY] = metrics_text(metrics)
        self.costs.next_batch()
        return text

    def _add_ti_hash(self) -> None:
        """The ``TI hashes`` entry A1111 writes when the token's name is typed (``sd_hijack_clip``: ``name: shorthash``,
        the first 12 hex digits of the file's SHA-256, new entries first), so the infotext names the embedding
        either way. Written after the host merged its own entries (``process_images_inner`` copies the hijack's
        after ``process_batch``), so a typed embedding's entry stays beside ours."""
        from modules import shared

        if not getattr(shared.opts, "textual_inversion_add_hashes_to_infotext", True) or not self.token.path:
            return
        try:
            short = file_sha256(self.token.path)[:12]
        except OSError as exc:
            log.info("MotionPrompt: no TI hash for the amortized token (%s)", exc)
            return
        entry = f"{self.token.name.replace(':', '').replace(',', '')}: {short}"
        existing = self.p.extra_generation_params.get(TI_HASHES)
        listed = [e.strip() for e in existing.split(",")] if existing else []
        if entry not in listed:
            self.p.extra_generation_params[TI_HASHES] = ", ".join([entry, *listed])

    def _measure(self, images) -> dict | None:
        """The clip's metrics (and D score, with a discriminator selected) like a guided clip's: XYZ plots of
        per-sample vs amortized vs hybrid compare like with like. Timed, loading included (``costs.measure``): it is
        all this mode adds to sampling, and the result line says so."""
        from modules import shared

        ad = animatediff.state()
        if images is None or ad is None or not shared.opts.data.get("motionprompt_report", True):
            return None
        with self.costs.spend("measure"):
            return self._metrics(images, ad)

    def _metrics(self, images, ad) -> dict | None:
        from modules import devices

        from ...disc.checkpoint import CheckpointError
        from .report import clip_metrics, frames_from_images

        try:
            disc = flow = None
            if self.args.discriminator:
                try:
                    disc = runs.load_disc(self.args, devices.device)
                    flow = runs.build_run_flow(self.args.engine_config(0, disc.flow)[0], devices.device)
                except (runs.GuidanceUnavailable, CheckpointError, ValueError) as exc:
                    log.info("MotionPrompt: amortized clip measured without D score (%s)", exc)
                    disc = flow = None
            fps = float(getattr(ad.params, "fps", 8) or 8)
            return clip_metrics(frames_from_images(runs.video_frames(images, ad)), disc, flow, fps, devices.device)
        except Exception as exc:  # a measurement must never cost the user the video
            log.warning("MotionPrompt: could not measure the amortized clip: %s", exc)
            return None

    def finish(self) -> None:
        self._restore(None)
        if self in _RUNS:
            _RUNS.remove(self)

    def result_text(self) -> str:
        if self.problem:
            return f"not applied: {self.problem}"
        if not self.steps:
            return "not applied: no sampling step reached the amortized token"
        t = self.token
        parts = [f"amortized token {t.name} ({t.vectors.shape[0]} vector(s)) on {self.steps} UNet evaluations",
                 "no inner loop", *self.notes, self.cost_text()]
        return "; ".join(parts)

    def cost_text(self) -> str:
        """``+1.72 s over 18.3 s plain (x1.09 time: loading and encoding the token 0.02 s + measuring the clip 1.70 s)``,
        and when the clip was measured, what the job costs without: the measurement is this mode's only real cost."""
        f = self.costs.figures()
        text = cost_text(f, [("loading and encoding the token", f["guidance_seconds"]),
                             ("measuring the clip", f["measure_seconds"])])
        if f["measure_seconds"] is not None and f["time_ratio"] is not None:
            without = (f["sampling_seconds"] + f["guidance_seconds"]) / f["sampling_seconds"]
            text += f"; measuring the clip is turned off in {MEASURE_SETTING} (then x{without:.2f} time)"
        return text

    # ------------------------------------------------------------------ the callback
    def on_denoiser(self, params) -> None:
        with self.costs.spend():  # MotionPrompt's time, never the host's plain sampling
            self._on_denoiser(params)

    def _on_denoiser(self, params) -> None:
        if self.problem:
            return
        if getattr(self.p, "is_hr_pass", False):  # the hires pass has its own conditioning: leave it alone
            self._restore(None)
            if "not in the hires pass" not in self.notes:
                self.notes.append("not in the hires pass")
            return
        try:
            den = params.denoiser
            if den is not self._denoiser:  # a new sampling pass: its text_cond is fresh, nothing to restore
                self._injection.active = False
                self._denoiser = den
                self._build(params)
            self._injection.put(params, self._post, self._rows, first=den.step == 0)
            self.steps += 1
        except Exception as exc:  # never break the user's generation
            self._stop(f"{type(exc).__name__}: {exc}" if not isinstance(exc, AmortizedUnavailable) else str(exc))
            self._restore(params)

    def _build(self, params) -> None:
        """The prompt rows with the token (once per sampling pass: a new denoiser)."""
        from modules import devices, prompt_parser

        conds_list, host_rows = prompt_parser.reconstruct_multicond_batch(self.p.c, 0)
        if any(len(c) != 1 for c in conds_list):
            raise AmortizedUnavailable("prompts with AND are not supported")
        prompts = list(self.p.prompts)
        rows = params.text_uncond.shape[0]
        if len(prompts) != rows or host_rows.shape[0] != rows:
            raise AmortizedUnavailable(f"{len(prompts)} prompts for {rows} latent rows")
        try:
            encoder, _ = build_encoder(self.p.sd_model.cond_stage_model, prompts, self.token.vectors.shape[0],
                                       host_rows, "input")
        except TokenBudgetError as exc:
            raise AmortizedUnavailable(str(exc)) from exc
        except RuntimeError as exc:  # the input level does not reproduce the prompt (prompt editing, ...)
            raise AmortizedUnavailable(str(exc)) from exc
        path = runs.sampling_path(self.p.sd_model)  # on Forge: CLIP loaded first, sampling models again after
        with path.step(params), torch.no_grad():
            self._rows = path.host(self.p.sd_model, encoder, None).encode(self.token.vectors.to(devices.device)).detach()
        ad = animatediff.state()
        self._post = ad.multi_cond(self._rows) if ad is not None else self._rows

    def _restore(self, params) -> None:
        self._injection.restore(params)

    def _stop(self, reason: str) -> None:
        if self.problem is None:
            self.problem = reason
            log.warning("MotionPrompt: amortized token stopped, sampling continues with the plain prompt: %s", reason)
