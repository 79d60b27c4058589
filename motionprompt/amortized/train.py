"""Amortized MotionPrompt: learn the token once, over prompts x seeds x guided timesteps, resumably.

Per-sample guidance optimises a fresh token for one clip at each guided step. Here one token is optimised
for *all* of them: the loss of an update is the MotionPrompt loss (``engine.token_loss.token_loss``: the same
encode -> x0 -> decode pairs -> flow -> D -> loss as an inner iteration) averaged over ``batch`` random
(prompt, seed, step) triples, with one persistent optimizer (Adam, or the engine's normalized SGD, whose
step is relative to the token's norm).

Where the noisy latents come from: for every (prompt, seed) the plain DDIM + CFG sampler of the reference
host runs once (batched) up to the window's last step and keeps z_t at each guided step. With
``refresh_every`` N the cache is rebuilt every N updates by sampling *with the current token appended at
every step* -- the way the token is used afterwards -- so the token keeps learning on the latents it
produces (on-policy). Validation scores D on the predicted x0 of held-out prompts (their own seeds, plain
trajectories, fixed steps and frame pairs) with the current token, against two fixed references measured
once: the prompt alone and the prompt with the init word.

Resume: every batch and frame pair is a function of (seed, update) alone, the optimizer state and the
token the cache was last built with are in the state file, so a resumed run continues exactly as an
uninterrupted one. Files in ``out``: ``state.safetensors`` (resume state; not an embedding), ``log.csv``
(one row per update), ``<name>.safetensors`` (the token as an embedding, rewritten at every save).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..engine.records import json_safe
from . import token_file
from .backend import DiffusersBackend, TokenBackend
from .config import TOKEN_DEFAULTS, TokenTrainConfig, TokenTrainError
from .inputs import (
    ModelSource,
    load_video_model,
    prompt_split,
    read_prompts,
    seed_list,
    trajectories,
    update_generator,
)

__all__ = ["TOKEN_DEFAULTS", "ModelSource", "TokenTrainConfig", "TokenTrainError", "TokenTrainer", "load_video_model",
           "prompt_split", "read_prompts", "trajectories"]

STATE_FORMAT = "motionprompt.token_state"
STATE_NAME = "state.safetensors"
LOG_NAME = "log.csv"
LOG_COLUMNS = ("step", "loss", "disc", "tv", "drift", "speed", "d_score", "grad_norm", "token_drift", "skipped",
               "val_d", "val_speed", "seconds")


# --------------------------------------------------------------------------------------------- trainer
class TokenTrainer:
    """``run()`` trains up to ``cfg.steps`` updates (resuming the state in ``cfg.out`` when there is one).
    ``disc``/``source``/``flow``: already built objects (tests, callers that hold them); else built from ``cfg``.
    ``backend``: where the model runs (``backend.TokenBackend``; the WebUI's tab passes its own); default: the
    reference host over ``source``."""

    def __init__(self, cfg: TokenTrainConfig, disc=None, source: ModelSource | None = None, log=print,
                 overwrite: bool = False, flow=None, backend: TokenBackend | None = None):
        from ..disc.checkpoint import Discriminator, load_discriminator
        from ..engine import schedule
        from ..flow.policy import resolve_flow
        from ..flow.registry import build_flow

        self.cfg = cfg.validate()
        if backend is None and source is None:  # a WebUI checkpoint or a pickle: say what to pass before any work
            from ..hosts.diffusers.sources import refuse_files

            refuse_files(cfg.model, cfg.motion_adapter or None, cfg.model_config or None)
        self.log = log
        self.device = torch.device(cfg.device)
        self.out = Path(cfg.out)
        self.state_path = self.out / STATE_NAME
        if overwrite and self.state_path.exists():
            self.state_path.unlink()
        if disc is None:
            if not cfg.disc:
                raise TokenTrainError("give the guiding discriminator (--disc FILE)")
            disc = load_discriminator(cfg.disc, self.device)
        if not isinstance(disc, Discriminator):
            raise TokenTrainError("disc must be a loaded Discriminator (its flow settings are part of it)")
        self.disc = disc
        disc.model.to(self.device).eval().requires_grad_(False)
        gcfg = cfg.guidance_config()
        gcfg.flow = resolve_flow(disc.flow, gcfg.flow, iters=cfg.flow_iters or None).settings
        self.gcfg = gcfg.validate()
        if flow is None:
            flow = build_flow(gcfg.flow, list(cfg.flow_weights), cfg.allow_download)
        self.flow = flow.to(self.device)
        if backend is None:
            source = source or load_video_model(cfg.model, cfg.frames, cfg.size, cfg.device, cfg.motion_adapter,
                                                cfg.model_config)
            backend = DiffusersBackend(source, cfg.sampling_steps, cfg.cfg_scale, gcfg.n_tokens, self.device,
                                       cfg.cache_batch)
        self.backend = backend
        self.train_prompts, self.val_prompts, self.prompt_source = prompt_split(cfg)
        self.train_seeds = seed_list("token_train", cfg.seeds, cfg.model, cfg.seed_base)
        self.val_seeds = seed_list("token_val", cfg.val_seeds, cfg.model, cfg.seed_base)
        self.guided = schedule.guided_steps(gcfg, cfg.sampling_steps)
        pick = np.unique(np.linspace(0, len(self.guided) - 1, min(cfg.val_steps, len(self.guided))).round().astype(int))
        self.val_guided = [self.guided[i] for i in pick]
        self.hosts = {p: backend.host(p) for p in [*self.train_prompts, *self.val_prompts]}
        init = next(iter(self.hosts.values())).embed_init(gcfg.init_word, gcfg.n_tokens).detach()
        if gcfg.start_token:  # continue from an earlier token (its vectors are T0: the drift anchors to them)
            init = token_file.load_token(gcfg.start_token, width=init.shape[-1], n_tokens=gcfg.n_tokens).vectors
        self.tokens0 = init.to(self.device, torch.float32).clone()
        self.tokens = self.tokens0.clone().requires_grad_(True)
        self.opt = torch.optim.Adam([self.tokens], lr=gcfg.lr) if gcfg.optimizer == "adam" else None
        self.step = 0
        self._saved_step = 0  # the update the state file holds
        self.seconds = 0.0
        self.history: list[dict] = []
        self.baseline: dict = {}
        self.cache_tokens: torch.Tensor | None = None  # the token the current cache was sampled with (None: plain)
        self.cache: torch.Tensor | None = None
        self.val_cache: torch.Tensor | None = None
        if self.state_path.exists():
            self._load()
        elif (self.out / LOG_NAME).exists():
            (self.out / LOG_NAME).unlink()  # a log without its state belongs to an abandoned run

    # ------------------------------------------------------------------ caches
    def _conds(self, prompts: list[str], tokens: torch.Tensor | None) -> list[torch.Tensor]:
        with torch.no_grad():
            return [self.hosts[p].cond_plain if tokens is None else self.hosts[p].encode(tokens.to(self.device))
                    for p in prompts]

    def _build(self, prompts: list[str], seeds: list[int], keep: list[int], tokens: torch.Tensor | None) -> torch.Tensor:
        """[len(prompts) * len(seeds), len(keep), ...], item = prompt index * len(seeds) + seed index."""
        conds = self._conds(prompts, tokens)
        items = [(c, s) for c in conds for s in seeds]
        return self.backend.trajectories([c for c, _ in items], [s for _, s in items], keep)

    def build_caches(self) -> None:
        t0 = time.perf_counter()
        self.cache = self._build(self.train_prompts, self.train_seeds, self.guided, self.cache_tokens)
        if self.val_prompts and self.val_cache is None:
            self.val_cache = self._build(self.val_prompts, self.val_seeds, self.val_guided, None)
        self.log(f"latent cache: {self.cache.shape[0]} clips x {len(self.guided)} steps"
                 + (" (with the token)" if self.cache_tokens is not None else " (plain)")
                 + f", {time.perf_counter() - t0:.1f} s")

    # ------------------------------------------------------------------ one update
    def _triple(self, item: int, k: int) -> tuple[str, torch.Tensor, int]:
        prompt = self.train_prompts[item // len(self.train_seeds)]
        return prompt, self.cache[item, k : k + 1].to(self.device), k

    def update(self) -> dict:
        """One optimizer update on ``batch`` random (prompt, seed, step) triples of the cache."""
        from ..engine.checkpointing import checkpointed
        from ..engine.token_loss import pair_speed, token_loss, token_step

        cfg, gcfg = self.cfg, self.gcfg
        gen = update_generator(cfg.seed, self.step)
        n_items, n_steps = self.cache.shape[0], self.cache.shape[1]
        picks = torch.randint(0, n_items * n_steps, (cfg.batch,), generator=gen).tolist()
        grad = torch.zeros_like(self.tokens)
        sums = dict.fromkeys(("total", "disc", "tv", "drift", "speed", "d_score"), 0.0)
        for j, pick in enumerate(picks):
            prompt, latents, k = self._triple(*divmod(pick, n_steps))
            host, step = self.hosts[prompt], self.guided[k]
            predict = self.backend.predictor(prompt, latents, step, gcfg.x0_mode)
            iteration = self.step * cfg.batch + j
            ref = None
            if cfg.lambda_speed > 0:  # the same pairs' speed with the prompt alone: what the token should keep
                with self.backend.step():
                    ref = pair_speed(host, host.cond_plain, predict, self.flow, gcfg, step, iteration)
            with torch.enable_grad(), self.backend.step(), checkpointed(self._blocks(host)):
                terms, _pairs = token_loss(host, self.tokens, self.tokens0, predict, self.flow, self.disc.model, gcfg,
                                           step, iteration, speed_ref=ref, lambda_speed=cfg.lambda_speed)
                (g,) = torch.autograd.grad(terms.total / cfg.batch, [self.tokens])
            grad += g
            for k in sums:
                value = getattr(terms, k)
                sums[k] += (0.0 if value is None else float(value.detach())) / cfg.batch
            del terms
        grad_norm = float(grad.norm())
        skipped = not all(math.isfinite(v) for v in [*sums.values(), grad_norm])
        if not skipped:
            token_step(self.tokens, self.tokens0, grad, grad_norm, gcfg, self.opt)
        self.step += 1
        return {"step": self.step, "loss": sums["total"], "disc": sums["disc"], "tv": sums["tv"],
                "drift": sums["drift"], "speed": sums["speed"], "d_score": sums["d_score"], "grad_norm": grad_norm,
                "token_drift": float((self.tokens.detach() - self.tokens0).norm()), "skipped": int(skipped)}

    def _blocks(self, host) -> list:
        """The modules checkpointed during an update (``cfg.memory``): none on the speed path; the UNet's blocks
        (balanced) and the VAE decoder's too (low), as the per-sample mode's memory paths do."""
        if self.cfg.memory == "speed" or not hasattr(host, "checkpoint_blocks"):
            return []
        return list(host.checkpoint_blocks(decoder=self.cfg.memory == "low"))

    # ------------------------------------------------------------------ validation
    def val_score(self, tokens: torch.Tensor | None) -> float | None:
        """Mean sigmoid(D) on the x0 of the held-out (prompt, seed, step) triples, with ``tokens`` appended
        (None: the prompt alone). Fixed latents, steps and frame pairs: comparable across calls."""
        return self.validate(tokens)[0]

    @torch.no_grad()
    def validate(self, tokens: torch.Tensor | None) -> tuple[float | None, float | None]:
        """(``val_score``, the mean flow speed of the same pairs): with the prompt alone's speed measured once, the
        log's ``val_speed`` says whether the token keeps the prompted speed (1.0) or shortens the travel (< 1)."""
        from ..engine.judge import decode_pairs, pair_flow, plan_pairs
        from ..engine.losses import flow_speed

        if self.val_cache is None:
            return None, None
        gcfg = self.gcfg
        pairs = plan_pairs(self.backend.frames, self.cfg.val_pairs, (gcfg.gap_min, gcfg.gap_max))
        scores, speeds = [], []
        for item in range(self.val_cache.shape[0]):
            prompt = self.val_prompts[item // len(self.val_seeds)]
            host = self.hosts[prompt]
            cond = host.cond_plain if tokens is None else host.encode(tokens.detach().to(self.device))
            for k, step in enumerate(self.val_guided):
                with self.backend.step():
                    x0 = self.backend.predictor(prompt, self.val_cache[item, k : k + 1].to(self.device), step,
                                                gcfg.x0_mode)(cond)
                    a, b = decode_pairs(host, x0, pairs)
                with torch.autocast(self.device.type, enabled=False):
                    flow_norm = pair_flow(self.flow, a, b)
                    scores.append(torch.sigmoid(self.disc.model(flow_norm).float()).mean().item())
                    speeds.append(flow_speed(flow_norm).item())
        return float(np.mean(scores)), float(np.mean(speeds))

    # ------------------------------------------------------------------ run
    def run(self, stop: Callable[[], bool] = lambda: False,
            progress: Callable[[int, int, dict], None] | None = None) -> str:
        """'done' or 'stopped' (saved, resumable)."""
        cfg = self.cfg
        if self.cache is None:
            self.build_caches()
        if not self.baseline:
            d_plain, speed_plain = self.validate(None)
            self.baseline = {"d_plain": d_plain, "d_init": self.val_score(self.tokens0), "speed_plain": speed_plain}
            self.log(f"held-out D score: prompt alone {_fmt(self.baseline['d_plain'])}, "
                     f"with '{self.gcfg.init_word}' {_fmt(self.baseline['d_init'])}")
        status = "done"
        t_last = time.perf_counter()
        row: dict | None = None
        try:
            while self.step < cfg.steps:
                if stop():
                    status = "stopped"
                    break
                if cfg.refresh_every and self.step and self.step % cfg.refresh_every == 0:
                    self.cache_tokens = self.tokens.detach().cpu().clone()
                    self.build_caches()
                row = self.update()
                if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                    row["val_d"], speed = self.validate(self.tokens)
                    plain = self.baseline.get("speed_plain")
                    row["val_speed"] = speed / plain if speed is not None and plain else None
                now = time.perf_counter()
                self.seconds += now - t_last
                t_last = now
                row["seconds"] = self.seconds
                self.history.append(row)
                self._append_log(row)
                if progress:
                    progress(self.step, cfg.steps, row)
                if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                    self.save()
        except BaseException:  # out of memory, a host error...: the updates done so far are kept, then it is raised
            self._save_after_failure(row)
            raise
        if status == "stopped":
            self.save()
        return status

    def _save_after_failure(self, row: dict | None) -> None:
        """Save the state of the last whole update (an update either finished, tokens and optimizer moved, or did
        not touch them), so the run resumes from there instead of from the last periodic save."""
        if self.step == self._saved_step:
            return
        if row is not None and row.get("step") == self.step and (not self.history or self.history[-1] is not row):
            row.setdefault("seconds", self.seconds)  # it failed between the update and its log row (validation)
            self.history.append(row)
        try:
            self.save()
            self.log(f"saved at update {self.step} after the error below; run again to continue")
        except Exception as exc:  # the error that stopped the run is the one to see
            self.log(f"could not save after the error ({type(exc).__name__}: {exc})")

    # ------------------------------------------------------------------ files
    def last_validation(self) -> dict:
        """The references, and the last held-out D and speed ratio (the token's flow speed / the prompt alone's)."""
        vals = [r for r in self.history if r.get("val_d") is not None]
        if not vals:
            return dict(self.baseline)
        return {**self.baseline, "d_last": vals[-1]["val_d"], "speed_ratio": vals[-1].get("val_speed"),
                "step": vals[-1]["step"]}

    def token_metadata(self) -> dict:
        """What the exported token says about itself (header metadata; A1111 does not read it)."""
        from .. import __version__

        g = self.gcfg
        disc_path = self.disc.path
        return json_safe({
            "init_word": g.init_word,
            "start_token": os.path.basename(g.start_token) if g.start_token else None,
            "discriminator": {"name": os.path.basename(disc_path) if disc_path else "(in memory)",
                              "sha256": token_file.file_sha256(disc_path) if disc_path and os.path.isfile(disc_path)
                              else None, "arch": self.disc.arch},
            "flow": g.flow.to_dict(),
            "loss": {**{k: getattr(g, k) for k in ("lambda_disc", "lambda_tv", "lambda_drift", "disc_loss", "x0_mode",
                                                   "window_start", "window_end", "every_k", "pairs", "gap_min", "gap_max")},
                     "lambda_speed": self.cfg.lambda_speed},
            "data": {"model": self.backend.info, "prompts": len(self.train_prompts), "held_out_prompts": len(self.val_prompts),
                     "source": self.prompt_source, "seeds_per_prompt": self.cfg.seeds, "sampling_steps": self.cfg.sampling_steps,
                     "cfg_scale": self.cfg.cfg_scale, "frames": self.backend.frames, "size": self.backend.size,
                     "guided_steps": self.guided},
            "training": {"updates": self.step, "planned": self.cfg.steps, "batch": self.cfg.batch,
                         "optimizer": g.optimizer, "lr": g.lr, "grad_clip": g.grad_clip,
                         "refresh_every": self.cfg.refresh_every, "seed": self.cfg.seed, "seconds": round(self.seconds, 1)},
            "validation": self.last_validation(),
            "motionprompt_version": __version__,
        })

    def export(self, path: str | os.PathLike | None = None) -> Path:
        path = Path(path) if path else self.out / f"{self.cfg.name}{token_file.SUFFIX}"
        return token_file.save_token(path, self.tokens.detach().cpu(), self.token_metadata())

    def save(self) -> Path:
        from ..files.atomic import save_safetensors

        tensors = {"tokens": self.tokens.detach().cpu().contiguous(), "tokens0": self.tokens0.cpu().contiguous()}
        groups = None
        if self.opt is not None:
            sd = self.opt.state_dict()
            groups = sd["param_groups"]
            for name, v in sd["state"].get(0, {}).items():
                tensors[f"adam.{name}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
        if self.cache_tokens is not None:
            tensors["cache_tokens"] = self.cache_tokens.contiguous()
        meta = {"format": STATE_FORMAT, "step": str(self.step), "seconds": repr(self.seconds),
                "config": json.dumps(self.cfg.fingerprint(), sort_keys=True), "opt_groups": json.dumps(groups),
                "history": json.dumps(json_safe(self.history)), "baseline": json.dumps(json_safe(self.baseline)),
                "note": "MotionPrompt amortized token training state for resuming; the token is the .safetensors "
                        "beside it"}
        save_safetensors(tensors, meta, self.state_path)
        self._saved_step = self.step
        self._write_log()
        path = self.export()
        return path

    def _load(self) -> None:
        from safetensors import safe_open

        try:
            with safe_open(os.fspath(self.state_path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  safe_open has no __iter__
        except Exception as exc:
            raise TokenTrainError(f"state {self.state_path} is unreadable ({exc}); start over with --overwrite") from exc
        if meta.get("format") != STATE_FORMAT:
            raise TokenTrainError(f"{self.state_path} is not a token training state")
        saved, now = json.loads(meta["config"]), self.cfg.fingerprint()
        if saved != now:
            diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            raise TokenTrainError(f"cannot resume {self.state_path}: settings differ from the saved run in {diff}; use "
                                  "the same settings (only steps, intervals, name and device may change) or --overwrite")
        with torch.no_grad():
            self.tokens.copy_(tensors["tokens"].to(self.device))
            self.tokens0.copy_(tensors["tokens0"].to(self.device))
        if self.opt is not None and "adam.step" in tensors:
            state = {k[5:]: v.to(self.device) if k != "adam.step" else v for k, v in tensors.items() if k.startswith("adam.")}
            self.opt.load_state_dict({"state": {0: state}, "param_groups": json.loads(meta["opt_groups"])})
        self.cache_tokens = tensors.get("cache_tokens")
        self.step, self.seconds = int(meta["step"]), float(meta.get("seconds", 0.0))
        self._saved_step = self.step
        self.history = json.loads(meta["history"])
        self.baseline = json.loads(meta["baseline"])
        self._write_log()  # drops rows logged after this state was saved
        self.log(f"resumed {self.state_path} at update {self.step}")

    def _append_log(self, row: dict) -> None:
        path = self.out / LOG_NAME
        new = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            if new:
                w.writerow(LOG_COLUMNS)
            w.writerow(_csv_row(row))

    def _write_log(self) -> None:
        from ..files.atomic import write_text

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(LOG_COLUMNS)
        for row in self.history:
            w.writerow(_csv_row(row))
        write_text(self.out / LOG_NAME, buf.getvalue())


def _csv_row(row: dict) -> list[str]:
    def fmt(v):
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return ""
        return str(v) if isinstance(v, int) else f"{v:.6g}"

    return [fmt(row.get(k)) for k in LOG_COLUMNS]


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"
