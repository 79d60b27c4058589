"""The run's memory between processes and between launches: resume state (safetensors) and the CSV log.

A resume file holds the model, the AdamW state, the step reached and the history, plus the settings
fingerprint that a resumption must match. Nothing in it depends on how many processes trained: the
model is saved unwrapped (no DDP ``module.`` prefix), the optimizer state is the same on every rank,
and batches are a function of (seed, step) alone, so a state saved by 2 processes resumes under 1 and
the other way round. Loaded with ``safe_open`` only: no pickle ever touches a user's file.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..engine.records import json_safe
from ..files.atomic import save_safetensors, write_text
from .config import TrainConfig, TrainError

STATE_FORMAT = "motionprompt.train_state"
STATE_VERSION = 1


@dataclass
class History:
    steps: list[int] = field(default_factory=list)  # 1-based step numbers
    loss: list[float] = field(default_factory=list)  # training BCE of that step's batch
    train_acc: list[float] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)  # {"step", "acc", "auc", "loss", "real_acc", "fake_acc", ...}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def save_state(path: Path, model, opt, step: int, history: History, cfg: TrainConfig, seconds: float,
               processes: int = 1) -> None:
    """``processes`` is recorded for the reader only; resuming never compares it."""
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
        "global_batch": str(cfg.batch),
        "processes": str(processes),
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
