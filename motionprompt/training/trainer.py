"""Train a flow discriminator: real flow -> 1, generated or corrupted flow -> 0 (paper eq. 9, BCE).

Flows come from the cache (``flow_cache``), so a step costs only the discriminator; the paper's D was
trained for ~20 epochs, here the budget is counted in steps of balanced batches (half real, half fake).

Reproducible and resumable by construction: the batch and augmentation of step ``s`` come from a
generator seeded with (seed, s) alone, so a run resumed from step ``s`` (model + AdamW state restored
exactly from the resume file) continues with the same batches an uninterrupted run would have used.
Everything is written atomically (temp file + rename): a kill mid-save leaves the previous files.

Files beside ``out`` (``D.safetensors``): ``D.resume.safetensors`` (weights, optimizer state, step,
history; not a discriminator), ``D.csv`` (loss and validation metrics per step).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..disc.checkpoint import save_discriminator
from ..disc.models import ARCHITECTURES, build_discriminator
from ..engine.config import FlowSettings
from ..engine.records import json_safe, num
from ..files.atomic import save_safetensors, write_text
from ..flow.registry import RAFT_FILES, FlowWeightsMissing, build_flow, find_raft_weights
from .clips import Skipped
from .corruptions import parse_corruptions
from .dataset import DataError, FlowSet, build_flow_set
from .flow_cache import FlowCache
from .roc import binary_metrics

log_ = logging.getLogger(__name__)
STATE_FORMAT = "motionprompt.train_state"
STATE_VERSION = 1
ProgressFn = Callable[[int, int, dict, "float | None"], None]  # (step, total, metrics, eta seconds)


class TrainError(ValueError):
    """A run that cannot start or resume; the message says what to do."""


def default_cache_dir() -> Path:
    """``$MOTIONPROMPT_FLOW_CACHE``, else ``~/.cache/motionprompt/flows`` (kept out of the models folder)."""
    env = os.environ.get("MOTIONPROMPT_FLOW_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "motionprompt" / "flows"


@dataclass
class TrainConfig:
    real: list[str]  # folders (or video files) of real footage
    out: str  # discriminator .safetensors to write
    flow: FlowSettings  # must be the flow the discriminator will be used with
    fake: list[str] = field(default_factory=list)  # folders of generated videos
    synthetic: list[str] = field(default_factory=list)  # corruption names (corruptions.CORRUPTIONS)
    flow_weights: list[str] = field(default_factory=list)  # folders searched for RAFT .pth
    allow_download: bool = False
    arch: str = "cnn"
    arch_config: dict = field(default_factory=dict)
    steps: int = 2000
    batch: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.01
    gap_min: int = 1
    gap_max: int = 4
    pairs_per_clip: int = 32
    synthetic_per_clip: int | None = None  # per real clip; None: pairs_per_clip (half with --fake)
    crop_min: float = 0.7
    augment: bool = True  # flips and time reversal, flow-aware
    val_fraction: float = 0.2
    val_every: int = 100
    save_every: int = 500
    seed: int = 0  # initialisation, batches, augmentation
    data_seed: int = 0  # pair sampling, crops, corruptions, split (changing it recomputes flows)
    cache_dir: str | None = None
    device: str = "cpu"
    resume: bool = False
    overwrite: bool = False

    # fields that may differ between a run and its resumption
    _RESUMABLE_CHANGES = ("out", "steps", "val_every", "save_every", "cache_dir", "device", "resume", "overwrite",
                          "flow_weights", "allow_download")

    def validate(self) -> TrainConfig:
        self.flow.validate()
        self.synthetic = parse_corruptions(self.synthetic)
        checks = [
            (bool(self.real), "give at least one folder of real videos"),
            (str(self.out).endswith(".safetensors"), f"output must be a .safetensors file, got {self.out}"),
            (self.arch in ARCHITECTURES, f"arch must be one of {sorted(ARCHITECTURES)}"),
            (self.steps >= 1 and self.batch >= 2, "need steps >= 1 and batch >= 2"),
            (self.lr > 0 and self.weight_decay >= 0, "need lr > 0 and weight_decay >= 0"),
            (1 <= self.gap_min <= self.gap_max, "need 1 <= gap min <= gap max"),
            (0 < self.crop_min <= 1, "crop_min must be in (0, 1]"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (self.val_every >= 1 and self.save_every >= 1, "val_every and save_every must be >= 1"),
            (self.pairs_per_clip >= 1, "pairs_per_clip must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise TrainError(msg)
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["flow"] = self.flow.to_dict()
        return d

    def fingerprint(self) -> dict:
        d = self.to_dict()
        for k in self._RESUMABLE_CHANGES:
            d.pop(k, None)
        d["real"] = [os.path.abspath(p) for p in d["real"]]
        d["fake"] = [os.path.abspath(p) for p in d["fake"]]
        return d


def side_paths(out) -> dict[str, Path]:
    out = Path(out)
    stem = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.name
    return {"checkpoint": out, "resume": out.with_name(stem + ".resume.safetensors"), "csv": out.with_name(stem + ".csv")}


@dataclass
class History:
    steps: list[int] = field(default_factory=list)  # 1-based step numbers
    loss: list[float] = field(default_factory=list)  # training BCE of that step's batch
    train_acc: list[float] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)  # {"step", "acc", "auc", "loss", "real_acc", "fake_acc", ...}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
    cache: dict  # {"folder", "computed", "reused", "flow_calls"}
    resumed_from: int = 0


def augment(flow: torch.Tensor, gen: torch.Generator, p: float = 0.5, hflip: bool = True, vflip: bool = True,
            reverse: bool = True) -> torch.Tensor:
    """Flow-aware flips per sample: mirroring the frames mirrors the field *and* negates that component.

    Horizontal flip: x -> -x, so u -> -u. Vertical flip: v -> -v. Time reversal (b -> a instead of
    a -> b): flow -> -flow (exact for translations, first-order otherwise).
    """
    b = flow.shape[0]
    hf, vf, rev = (torch.rand(3, b, generator=gen) < p).to(flow.device)
    hf, vf, rev = hf & hflip, vf & vflip, rev & reverse
    out = flow.clone()
    out[hf] = out[hf].flip(-1)
    out[hf, 0] = -out[hf, 0]
    out[vf] = out[vf].flip(-2)
    out[vf, 1] = -out[vf, 1]
    out[rev] = -out[rev]
    return out


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


# -- resume state --------------------------------------------------------------------------------------


def save_state(path: Path, model, opt, step: int, history: History, cfg: TrainConfig, seconds: float) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    sd = opt.state_dict()
    for idx, st in sd["state"].items():
        for name, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"opt.{idx}.{name}"] = t.detach().cpu().contiguous()
    tensors["hist.steps"] = torch.tensor(history.steps, dtype=torch.int64)
    tensors["hist.loss"] = torch.tensor(history.loss, dtype=torch.float64)
    tensors["hist.train_acc"] = torch.tensor(history.train_acc, dtype=torch.float64)
    meta = {
        "format": STATE_FORMAT,
        "format_version": str(STATE_VERSION),
        "step": str(step),
        "seconds": repr(seconds),
        "config": json.dumps(cfg.fingerprint(), sort_keys=True),
        "opt_groups": json.dumps(sd["param_groups"]),
        "val": json.dumps(json_safe(history.val)),
        "note": "MotionPrompt training state for resuming; not a discriminator",
    }
    save_safetensors(tensors, meta, path)


def load_state(path: Path, model, opt, cfg: TrainConfig) -> tuple[int, History, float]:
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  safe_open has no __iter__
    except Exception as exc:
        raise TrainError(f"resume state {path} is unreadable ({exc}); start over with overwrite") from exc
    if meta.get("format") != STATE_FORMAT:
        raise TrainError(f"{path} is not a MotionPrompt training state")
    saved = json.loads(meta["config"])
    now = json.loads(json.dumps(cfg.fingerprint(), sort_keys=True))
    if saved != now:
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise TrainError(f"cannot resume {path}: settings differ from the saved run in {diff}; use the same "
                         "settings (only steps, validation/save intervals and device may change) or overwrite")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["opt_groups"])})
    history = History(
        steps=tensors["hist.steps"].tolist(),
        loss=tensors["hist.loss"].tolist(),
        train_acc=tensors["hist.train_acc"].tolist(),
        val=json.loads(meta["val"]),
    )
    return int(meta["step"]), history, float(meta.get("seconds", 0.0))


def write_csv(path: Path, history: History) -> None:
    cols = ["step", "loss", "train_acc", "val_loss", "val_acc", "val_auc", "val_real_acc", "val_fake_acc"]
    val = {v["step"]: v for v in history.val}
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)

    def fmt(x):
        return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.6g}"

    for s, loss, acc in zip(history.steps, history.loss, history.train_acc, strict=True):
        v = val.get(s, {})
        w.writerow([s, fmt(loss), fmt(acc), *(fmt(v.get(k)) for k in ("loss", "acc", "auc", "real_acc", "fake_acc"))])
    write_text(path, buf.getvalue())


# -- training ------------------------------------------------------------------------------------------


def _validate_model(model, data: FlowSet, device) -> dict:
    if not data.val.any():
        return {}
    idx = data.val.nonzero().squeeze(1)
    logits = []
    with torch.no_grad():
        for i in range(0, len(idx), 256):
            logits.append(model(data.flows[idx[i : i + 256]].float().to(device)).float().cpu())
    return binary_metrics(torch.cat(logits).numpy(), data.labels[idx].numpy(), data.source[idx].numpy(),
                          data.source_names)


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step) * 7_919) % (2**63))


def prepare_data(cfg: TrainConfig, progress: ProgressFn | None = None, interrupted=None,
                 flow_factory: Callable[[], torch.nn.Module] | None = None) -> tuple[FlowSet, FlowCache]:
    """Find clips and get (cached) flows; the first half of ``train_discriminator``, usable alone."""
    cfg.validate()
    weights_id = _flow_weights_id(cfg)
    if flow_factory is None:
        def flow_factory():
            return build_flow(cfg.flow, cfg.flow_weights, cfg.allow_download)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    cache = FlowCache(cache_dir, cfg.flow, flow_factory, weights_id, cfg.device)
    data = build_flow_set(
        cache, cfg.real, cfg.fake, cfg.synthetic, cfg.pairs_per_clip, cfg.synthetic_per_clip,
        (cfg.gap_min, cfg.gap_max), cfg.crop_min, cfg.data_seed, cfg.val_fraction,
        exclude=[cache_dir], progress=progress, interrupted=interrupted,
    )
    return data, cache


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
    prepared flows once (the WebUI tab draws samples from them) before training starts.
    """
    say = log or log_.info
    cfg.validate()
    paths = side_paths(cfg.out)
    has_state = paths["resume"].is_file()
    if not cfg.overwrite and not cfg.resume and (has_state or paths["checkpoint"].exists()):
        what = "an unfinished or extendable run" if has_state else "a discriminator"
        raise TrainError(f"{paths['checkpoint']} already holds {what}; resume it or choose overwrite / another file")
    if cfg.resume and not has_state and paths["checkpoint"].exists() and not cfg.overwrite:
        raise TrainError(f"cannot resume {paths['checkpoint']}: no resume state {paths['resume'].name} beside it")

    t_flow = time.perf_counter()
    data, cache = prepare_data(cfg, progress, interrupted, flow_factory)
    flow_seconds = time.perf_counter() - t_flow
    cache_info = {"folder": str(cache.folder), "computed": cache.computed, "reused": cache.reused,
                  "flow_calls": cache.flow_calls}
    say(f"flows: {cache.computed} clip shard(s) computed, {cache.reused} reused from {cache.folder} "
        f"({flow_seconds:.1f} s)")
    for note in data.notes:
        say(f"note: {note}")
    if on_data is not None:
        on_data(data)
    if data.interrupted:
        return TrainResult(None, None, None, 0, cfg.steps, True, 0.0, flow_seconds, History(), {}, {},
                           data.skipped, cache_info)

    device = torch.device(cfg.device)
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
    elif cfg.overwrite:
        paths["resume"].unlink(missing_ok=True)

    train_idx = (~data.val).nonzero().squeeze(1)
    real_idx = train_idx[data.labels[train_idx] == 1]
    fake_idx = train_idx[data.labels[train_idx] == 0]
    if len(real_idx) == 0 or len(fake_idx) == 0:
        raise DataError("the training split lacks real or fake samples; lower the validation fraction or add clips")
    half = cfg.batch // 2
    labels = torch.cat([torch.ones(half), torch.zeros(cfg.batch - half)]).to(device)

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
            "seconds": prior_seconds + (time.perf_counter() - t0),
        })

    def save(step: int) -> None:
        seconds = prior_seconds + (time.perf_counter() - t0)
        save_state(paths["resume"], model, opt, step, history, cfg, seconds)
        save_discriminator(paths["checkpoint"], model, cfg.flow, training_meta(step))
        write_csv(paths["csv"], history)

    t0 = time.perf_counter()
    step = start
    stopped = False
    for step in range(start, cfg.steps):
        if interrupted is not None and interrupted():
            stopped = True
            break
        gen = _step_generator(cfg.seed, step)
        ri = real_idx[torch.randint(len(real_idx), (half,), generator=gen)]
        fi = fake_idx[torch.randint(len(fake_idx), (cfg.batch - half,), generator=gen)]
        x = data.flows[torch.cat([ri, fi])].float()
        if cfg.augment:
            x = augment(x, gen)
        logits = model(x.to(device))
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.steps.append(step + 1)
        history.loss.append(float(loss.detach()))
        history.train_acc.append(float(((logits.detach() > 0).float() == labels).float().mean()))
        done = step + 1
        if done % cfg.val_every == 0 or done == cfg.steps:
            model.eval()
            metrics = _validate_model(model, data, device)
            model.train()
            if metrics:
                history.val.append({"step": done, **metrics})
        if done % cfg.save_every == 0 and done != cfg.steps:
            save(done)
        if progress is not None:
            rate = (time.perf_counter() - t0) / (done - start)
            last = history.val[-1] if history.val else {}
            window = history.loss[-20:]
            progress(done, cfg.steps, {"phase": "train", "loss": sum(window) / len(window),
                                       "train_acc": float(np.mean(history.train_acc[-20:])),
                                       "val_acc": last.get("acc"), "val_auc": last.get("auc"),
                                       "val_step": last.get("step")}, rate * (cfg.steps - done))
    else:
        step = cfg.steps
    final = step if stopped else cfg.steps
    if stopped and final == 0:  # nothing learned: no random-weight file in the txt2img dropdown
        return TrainResult(None, None, None, 0, cfg.steps, True, 0.0, flow_seconds, history, {}, data.summary,
                           data.skipped, cache_info)
    if final > start or not paths["checkpoint"].exists():
        save(final)
    seconds = time.perf_counter() - t0
    last = history.val[-1] if history.val else {}
    if last:
        say(f"step {final}/{cfg.steps}: validation accuracy {num(last.get('acc'))}, ROC AUC {num(last.get('auc'))}")
    return TrainResult(str(paths["checkpoint"]), str(paths["resume"]), str(paths["csv"]), final, cfg.steps, stopped,
                       seconds, flow_seconds, history, dict(last), data.summary, data.skipped, cache_info, start)
