"""Train a flow discriminator: real flow -> 1, generated or corrupted flow -> 0 (paper eq. 9, BCE).

Flows come from the cache (``flow_cache``), so a step costs only the discriminator; the paper's D was
trained for ~20 epochs, here the budget is counted in steps of balanced batches (half real, half fake).

Reproducible and resumable by construction: the batch and augmentation of step ``s`` come from a
generator seeded with (seed, s) alone (``batches``), so a run resumed from step ``s`` (model + AdamW
state restored exactly from the resume file, ``state``) continues with the same batches an
uninterrupted run would have used. Everything is written atomically (temp file + rename): a kill
mid-save leaves the previous files.

Under torchrun the same function runs in every process (``distributed``): flows are extracted
rank-sharded into the shared cache, each rank trains on its share of every global batch inside DDP,
losses and validation logits are reduced over the ranks, and rank 0 alone writes files. A state saved
by N processes resumes under M, since nothing saved depends on N.

Files beside ``out`` (``D.safetensors``): ``D.resume.safetensors`` (weights, optimizer state, step,
history; not a discriminator), ``D.csv`` (loss and validation metrics per step).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..disc.checkpoint import save_discriminator
from ..disc.models import build_discriminator
from ..engine.records import json_safe, num
from ..flow.registry import RAFT_FILES, FlowWeightsMissing, build_flow, find_raft_weights
from .batches import StepBatches
from .clips import Skipped
from .config import TrainConfig, TrainError, default_cache_dir, side_paths
from .dataset import FlowSet, build_flow_set
from .distributed import Group, joined, world_size_from_env
from .flow_cache import FlowCache, collect, collect_shared
from .roc import binary_metrics
from .state import History, load_state, save_state, write_csv

log_ = logging.getLogger(__name__)
ProgressFn = Callable[[int, int, dict, "float | None"], None]  # (step, total, metrics, eta seconds)
__all__ = ["History", "TrainConfig", "TrainError", "TrainResult", "default_cache_dir", "prepare_data",
           "side_paths", "train_discriminator"]


@dataclass
class TrainResult:
    checkpoint: str | None  # None when interrupted before the first step
    resume_state: str | None
    csv: str | None
    step: int
    total_steps: int
    interrupted: bool
    seconds: float  # training time of this call (flows excluded)
    flow_seconds: float
    history: History
    metrics: dict  # last validation metrics (empty without a validation set)
    data: dict  # data summary (clips, samples per source, split, notes)
    skipped: list[Skipped]
    cache: dict  # {"folder", "computed", "reused", "flow_calls"}, summed over processes
    resumed_from: int = 0
    processes: int = 1  # torchrun world size of this call
    rank: int = 0  # this process; only rank 0 wrote files and reported progress


def _flow_weights_id(cfg: TrainConfig) -> str | None:
    """Which RAFT weights produce the flow (part of the cache key); fails early when there are none."""
    if cfg.flow.backend not in RAFT_FILES:
        return None
    path = find_raft_weights(cfg.flow.backend, list(cfg.flow_weights))
    if path is not None:
        return f"{path.name}:{path.stat().st_size}"
    if cfg.allow_download:
        return f"torchvision:{RAFT_FILES[cfg.flow.backend]}"
    where = ", ".join(cfg.flow_weights) or "no folder given"
    raise FlowWeightsMissing(
        f"'{cfg.flow.backend}' flow needs pretrained RAFT weights: put {RAFT_FILES[cfg.flow.backend]} in a folder "
        f"given with --flow-weights DIR (searched: {where}), allow the download, or train on the weight-free "
        "'lk_pyramid' flow (then guide with 'lk_pyramid' too)."
    )


# -- training ------------------------------------------------------------------------------------------


def _validate_model(model, data: FlowSet, device, group: Group) -> dict:
    """Each rank scores its share of the validation set; the logits are gathered so every rank computes
    the same metrics over the whole set (ROC AUC needs all scores at once, not a mean of shares)."""
    if not data.val.any():
        return {}
    idx = data.val.nonzero().squeeze(1)
    mine = group.share(len(idx))
    logits = [torch.zeros(0)]
    with torch.no_grad():
        for i in range(mine.start, mine.stop, 256):
            chunk = idx[i : min(i + 256, mine.stop)]
            logits.append(model(data.flows[chunk].float().to(device)).float().cpu())
    scores = group.gather(torch.cat(logits), len(idx))
    return binary_metrics(scores.numpy(), data.labels[idx].numpy(), data.source[idx].numpy(), data.source_names)


def prepare_data(cfg: TrainConfig, progress: ProgressFn | None = None, interrupted=None,
                 flow_factory: Callable[[], torch.nn.Module] | None = None, group: Group | None = None,
                 device: str | None = None) -> tuple[FlowSet, FlowCache]:
    """Find clips and get (cached) flows; the first half of ``train_discriminator``, usable alone.

    With a ``group`` of several ranks each computes its share of the flows into the shared cache and
    all return the whole set (``flow_cache.collect_shared``); ``device`` overrides ``cfg.device``
    (a rank's own GPU).
    """
    cfg.validate()
    group = group or Group()
    weights_id = _flow_weights_id(cfg)
    if flow_factory is None:
        def flow_factory():
            return build_flow(cfg.flow, cfg.flow_weights, cfg.allow_download)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    cache = FlowCache(cache_dir, cfg.flow, flow_factory, weights_id, device or cfg.device)
    if group.main:
        cache.sweep_orphans()
    data = build_flow_set(
        cache, cfg.real, cfg.fake, cfg.synthetic, cfg.pairs_per_clip, cfg.synthetic_per_clip,
        (cfg.gap_min, cfg.gap_max), cfg.crop_min, cfg.data_seed, cfg.val_fraction,
        exclude=[cache_dir], progress=progress, interrupted=interrupted,
        collect_jobs=collect if group.world == 1 else functools.partial(collect_shared, group),
    )
    return data, cache


def _check_files(cfg: TrainConfig, paths: dict[str, Path]) -> bool:
    """Refuse to clobber another run; True when there is a resume state to continue."""
    has_state = paths["resume"].is_file()
    if not cfg.overwrite and not cfg.resume and (has_state or paths["checkpoint"].exists()):
        what = "an unfinished or extendable run" if has_state else "a discriminator"
        raise TrainError(f"{paths['checkpoint']} already holds {what}; resume it or choose overwrite / another file")
    if cfg.resume and not has_state and paths["checkpoint"].exists() and not cfg.overwrite:
        raise TrainError(f"cannot resume {paths['checkpoint']}: no resume state {paths['resume'].name} beside it")
    return has_state


def _check_world(cfg: TrainConfig) -> int:
    world = world_size_from_env()
    if cfg.batch % world:
        raise TrainError(f"--batch {cfg.batch} is the global batch and must split evenly over the {world} "
                         f"processes torchrun started (each takes batch / {world}); choose a multiple of {world}")
    return world


def train_discriminator(
    cfg: TrainConfig,
    progress: ProgressFn | None = None,
    interrupted: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
    flow_factory: Callable[[], torch.nn.Module] | None = None,
    on_data: Callable[[FlowSet], None] | None = None,
) -> TrainResult:
    """Prepare flows, then train (or resume). Raises ``TrainError`` / ``DataError`` / ``FlowWeightsMissing``.

    ``progress(step, total, metrics, eta_seconds)`` is called after every flow clip (metrics["phase"] ==
    "flow") and every training step ("train"); ``interrupted()`` is checked before each of them, and an
    interrupted run saves its state so that ``resume=True`` continues it. ``on_data(flow_set)`` sees the
    prepared flows once (the WebUI tab draws samples from them) before training starts. Under torchrun,
    progress and ``log`` come from rank 0 only, and any rank's ``interrupted()`` stops all of them.
    """
    cfg.validate()
    paths = side_paths(cfg.out)
    has_state = _check_files(cfg, paths)
    _check_world(cfg)
    with joined(cfg.device) as (group, device):
        return _train(cfg, group, device, paths, has_state, progress, interrupted, log, flow_factory, on_data)


def _train(cfg: TrainConfig, group: Group, device_name: str, paths: dict[str, Path], has_state: bool,
           progress, interrupted, log, flow_factory, on_data) -> TrainResult:
    def say(msg: str) -> None:
        if group.main:
            (log or log_.info)(msg)

    report = progress if group.main else None

    def stop_now() -> bool:
        asked = interrupted is not None and interrupted()
        return group.any(asked) if group.world > 1 else asked

    t_flow = time.perf_counter()
    data, cache = prepare_data(cfg, report, interrupted, flow_factory, group, device_name)
    flow_seconds = time.perf_counter() - t_flow
    computed, reused, calls = (int(v) for v in group.sum([cache.computed, cache.reused, cache.flow_calls]))
    cache_info = {"folder": str(cache.folder), "computed": computed, "reused": reused, "flow_calls": calls}
    say(f"flows: {computed} clip shard(s) computed, {reused} reused from {cache.folder} ({flow_seconds:.1f} s"
        + (f", {group.world} processes)" if group.world > 1 else ")"))
    for note in data.notes:
        say(f"note: {note}")
    if on_data is not None:
        on_data(data)
    ranks = {"processes": group.world, "rank": group.rank}
    if data.interrupted:
        return TrainResult(None, None, None, 0, cfg.steps, True, 0.0, flow_seconds, History(), {}, {},
                           data.skipped, cache_info, **ranks)

    device = torch.device(device_name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_discriminator(cfg.arch, **cfg.arch_config)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history, start, prior_seconds = History(), 0, 0.0
    if cfg.resume and has_state and not cfg.overwrite:
        start, history, prior_seconds = load_state(paths["resume"], model, opt, cfg)
        if cfg.steps < start:
            raise TrainError(f"{paths['checkpoint'].name} is already at step {start}; ask for more steps than that "
                             "to continue it, or overwrite")
        say(f"resuming {paths['checkpoint'].name} from step {start}")
    elif cfg.overwrite and group.main:
        paths["resume"].unlink(missing_ok=True)
    trained = group.wrap(model)  # DDP under torchrun; ``model`` stays the unwrapped one that is saved
    batches = StepBatches(data, cfg.batch, cfg.seed, cfg.augment, group.share(cfg.batch))
    labels = batches.labels.to(device)

    def training_meta(step: int) -> dict:
        last = history.val[-1] if history.val else {}
        return json_safe({
            "step": step,
            "steps": cfg.steps,
            "metrics": {k: v for k, v in last.items() if k != "detected"},
            "detected": last.get("detected", {}),
            "data": data.summary,
            "skipped_files": len(data.skipped),
            "settings": {k: v for k, v in cfg.to_dict().items() if k not in ("resume", "overwrite")},
            "processes": group.world,
            "seconds": prior_seconds + (time.perf_counter() - t0),
        })

    def save(step: int) -> None:
        if not group.main:
            return
        seconds = prior_seconds + (time.perf_counter() - t0)
        save_state(paths["resume"], model, opt, step, history, cfg, seconds, group.world)
        save_discriminator(paths["checkpoint"], model, cfg.flow, training_meta(step))
        write_csv(paths["csv"], history)

    t0 = time.perf_counter()
    step = start
    stopped = False
    for step in range(start, cfg.steps):
        if stop_now():
            stopped = True
            break
        x, _ = batches(step)
        logits = trained(x.to(device))
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        acc = ((logits.detach() > 0).float() == labels).float().mean()
        loss_sum, acc_sum = group.sum([float(loss.detach()), float(acc)])  # equal shares: mean of means
        history.steps.append(step + 1)
        history.loss.append(loss_sum / group.world)
        history.train_acc.append(acc_sum / group.world)
        done = step + 1
        if done % cfg.val_every == 0 or done == cfg.steps:
            model.eval()
            metrics = _validate_model(model, data, device, group)
            model.train()
            if metrics:
                history.val.append({"step": done, **metrics})
        if done % cfg.save_every == 0 and done != cfg.steps:
            save(done)
        if report is not None:
            rate = (time.perf_counter() - t0) / (done - start)
            last = history.val[-1] if history.val else {}
            window = history.loss[-20:]
            report(done, cfg.steps, {"phase": "train", "loss": sum(window) / len(window),
                                     "train_acc": float(np.mean(history.train_acc[-20:])),
                                     "val_acc": last.get("acc"), "val_auc": last.get("auc"),
                                     "val_step": last.get("step")}, rate * (cfg.steps - done))
    else:
        step = cfg.steps
    final = step if stopped else cfg.steps
    if stopped and final == 0:  # nothing learned: no random-weight file in the txt2img dropdown
        return TrainResult(None, None, None, 0, cfg.steps, True, 0.0, flow_seconds, history, {}, data.summary,
                           data.skipped, cache_info, **ranks)
    if final > start or not paths["checkpoint"].exists():
        save(final)
    group.barrier()  # no rank returns before rank 0's files exist
    seconds = time.perf_counter() - t0
    last = history.val[-1] if history.val else {}
    if last:
        say(f"step {final}/{cfg.steps}: validation accuracy {num(last.get('acc'))}, ROC AUC {num(last.get('auc'))}")
    return TrainResult(str(paths["checkpoint"]), str(paths["resume"]), str(paths["csv"]), final, cfg.steps, stopped,
                       seconds, flow_seconds, history, dict(last), data.summary, data.skipped, cache_info, start,
                       **ranks)
