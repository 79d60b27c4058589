"""Flow cache: each clip's training flows computed once, stored as a safetensors shard, reused.

Flow is the expensive part of discriminator training (RAFT on every pair), while the discriminator
itself is tiny, so flows are computed once per clip and reused by every epoch and every later run. A
shard holds one clip's flows for one role (real / generated / synthetic) and carries in its metadata
everything that produced them: flow backend, size, iterations, RAFT weights file, the clip's files
with sizes and modification times, pair-sampling seed, gap range, crop range, pair count and the
corruption set. A shard is used only if all of that matches exactly; otherwise it is recomputed and the
stale shard of that clip and role is deleted. Clips that cannot be used get a shard too (status
"skipped" + reason), so a cached run decodes nothing and still reports them.

Flows are stored normalized (fraction of the frame, ``judge.pair_flow``), float16, at the flow
working resolution: exactly what the discriminator sees.

One file per (clip, role), each appearing only by an atomic rename, is what lets several torchrun
processes fill one folder at once (``collect_shared``): no two of them own the same file, and a reader
sees a shard whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..engine.judge import pair_flow
from ..files.atomic import save_safetensors
from ..files.video import to_tensor
from ..flow.settings import FlowSettings
from .clips import (
    Clip,
    ClipError,
    Skipped,
    count_frames,
    crop_resize,
    random_crop,
    read_frames,
    sample_gap_pair,
)
from .corruptions import apply_transform, plan_pair

log_ = logging.getLogger(__name__)
SHARD_FORMAT = "motionprompt.flowshard"
CACHE_VERSION = 1
ROLES = {"real": 1, "generated": 2, "synthetic": 3}


@dataclass(frozen=True)
class PairPlan:
    """How one clip's pairs are drawn: part of the cache key."""

    count: int  # pairs per clip
    gap_min: int
    gap_max: int
    crop_min: float  # square crops of crop_min..1 of the short side
    seed: int  # pair-sampling seed
    corruptions: tuple[str, ...] = ()  # synthetic role only

    def to_dict(self) -> dict:
        d = asdict(self)
        d["corruptions"] = list(self.corruptions)
        return d


@dataclass
class ClipFlows:
    clip: Clip
    role: str
    flows: torch.Tensor  # [N, 2, H, W] float16, normalized flow
    pairs: torch.Tensor  # [N, 2] source frame indices (a -> b)
    sources: list[str]  # per sample: "real", "generated" or the corruption name
    n_frames: int
    cached: bool


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


class FlowCache:
    """Per-clip flow shards in ``folder``. ``flow_factory()`` builds the estimator only when needed.

    ``flow_calls`` counts estimator batches run by this object (0 on a fully cached run).
    """

    def __init__(self, folder, settings: FlowSettings, flow_factory: Callable[[], torch.nn.Module],
                 weights_id: str | None = None, device: str | torch.device = "cpu", batch: int = 16):
        settings.validate()
        self.folder = Path(folder)
        self.settings = settings
        self.flow_factory = flow_factory
        self.weights_id = weights_id
        self.device = torch.device(device)
        self.batch = batch
        self._flow = None
        self.flow_calls = 0
        self.computed = 0
        self.reused = 0

    def key(self, clip: Clip, role: str, plan: PairPlan) -> dict:
        return {
            "version": CACHE_VERSION,
            "flow": self.settings.to_dict(),
            "flow_weights": self.weights_id,
            "clip": clip.path,
            "rel": clip.rel,
            "kind": clip.kind,
            "files": [list(s) for s in clip.signature],
            "role": role,
            "plan": plan.to_dict(),
        }

    def shard_path(self, clip: Clip, role: str, key: dict) -> Path:
        return self.folder / f"{_hash([clip.path, role])}-{_hash(key)}.safetensors"

    def get(self, clip: Clip, role: str, plan: PairPlan) -> ClipFlows | Skipped:
        """The clip's flows (from the cache when it matches, else computed and stored) or why not."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {sorted(ROLES)}, got {role!r}")
        key = self.key(clip, role, plan)
        path = self.shard_path(clip, role, key)
        hit = self._read(path, key, clip, role)
        if hit is not None:
            self.reused += 1
            return hit
        try:
            result = self._compute(clip, role, plan)
        except ClipError as exc:
            result = Skipped(clip.path, str(exc))
        self._write(path, key, result)
        self.computed += 1
        return result

    def sweep_orphans(self, older_than_s: float = 3600.0) -> int:
        """Delete temp files left by writers killed mid-save; returns how many.

        A shard's temp file lives for the seconds its save takes, so one an hour old belongs to a dead
        process, never to a live writer of a concurrent run sharing this folder.
        """
        if not self.folder.is_dir():
            return 0
        removed, now = 0, time.time()
        for tmp in self.folder.glob(".*.safetensors.*.tmp"):
            try:
                if now - tmp.stat().st_mtime > older_than_s:
                    tmp.unlink()
                    removed += 1
            except OSError:  # another process swept it first
                pass
        return removed

    # -- storage -----------------------------------------------------------------------------------

    def _read(self, path: Path, key: dict, clip: Clip, role: str) -> ClipFlows | Skipped | None:
        if not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                if meta.get("format") != SHARD_FORMAT or json.loads(meta.get("key", "null")) != key:
                    return None
                if meta.get("status") == "skipped":
                    return Skipped(clip.path, meta.get("reason", "skipped"))
                flows, pairs = f.get_tensor("flow"), f.get_tensor("pairs")
                source_idx = f.get_tensor("source").tolist()
            names = json.loads(meta["sources"])
            return ClipFlows(clip, role, flows, pairs, [names[i] for i in source_idx], int(meta["n_frames"]), True)
        except Exception:  # unreadable or foreign shard: recompute it
            return None

    def _write(self, path: Path, key: dict, result: ClipFlows | Skipped) -> None:
        meta = {"format": SHARD_FORMAT, "key": json.dumps(key, sort_keys=True)}
        if isinstance(result, Skipped):
            tensors = {"flow": torch.zeros(0)}
            meta.update(status="skipped", reason=result.reason)
        else:
            names = sorted(set(result.sources))
            tensors = {
                "flow": result.flows.contiguous(),
                "pairs": result.pairs.to(torch.int32).contiguous(),
                "source": torch.tensor([names.index(s) for s in result.sources], dtype=torch.int32),
            }
            meta.update(status="ok", sources=json.dumps(names), n_frames=str(result.n_frames))
        save_safetensors(tensors, meta, path)
        prefix = path.name.split("-")[0] + "-"
        for stale in path.parent.glob(prefix + "*.safetensors"):
            if stale != path:
                stale.unlink(missing_ok=True)

    # -- computation -------------------------------------------------------------------------------

    def _plan(self, clip: Clip, role: str, plan: PairPlan, n: int, rng: np.random.Generator) -> list[tuple]:
        """[(a, b, crop, source, transform seed)] for one clip."""
        specs = []
        for i in range(plan.count):
            if role == "synthetic":
                names = plan.corruptions[i % len(plan.corruptions):] + plan.corruptions[: i % len(plan.corruptions)]
                for name in names:  # the scheduled corruption, else the next one this clip allows
                    pair = plan_pair(name, n, plan.gap_min, plan.gap_max, rng)
                    if pair is not None:
                        break
                else:
                    continue
                source = name
            else:
                pair, source = sample_gap_pair(n, plan.gap_min, plan.gap_max, rng), role
            specs.append((*pair, random_crop(rng, plan.crop_min), source, int(rng.integers(2**31))))
        return specs

    def _compute(self, clip: Clip, role: str, plan: PairPlan) -> ClipFlows:
        n = count_frames(clip)
        if n < 2:
            raise ClipError(f"only {n} frame: need at least 2")
        if role == "synthetic" and not plan.corruptions:
            raise ValueError("synthetic role needs at least one corruption")
        rng = np.random.default_rng([plan.seed, zlib.crc32(clip.rel.encode()), ROLES[role]])
        specs = self._plan(clip, role, plan, n, rng)
        if not specs:
            raise ClipError(f"{n} frames are too few for any of the corruptions {list(plan.corruptions)}")
        size = self.settings.size
        frames = read_frames(clip, [s[0] for s in specs] + [s[1] for s in specs], math.ceil(size / plan.crop_min))

        def tensor(img: np.ndarray) -> torch.Tensor:
            return to_tensor(img[None])[0]

        a_list, b_list = [], []
        for a, b, crop, source, seed in specs:
            fa, fb = tensor(crop_resize(frames[a], crop, size)), tensor(crop_resize(frames[b], crop, size))
            if role == "synthetic":
                trng = np.random.default_rng(seed)
                fa, fb = apply_transform(source, fa, trng), apply_transform(source, fb, trng)
            a_list.append(fa)
            b_list.append(fb)
        if self._flow is None:
            self._flow = self.flow_factory().to(self.device).eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(specs), self.batch):
                fa = torch.stack(a_list[i : i + self.batch]).to(self.device)
                fb = torch.stack(b_list[i : i + self.batch]).to(self.device)
                self.flow_calls += 1
                out.append(pair_flow(self._flow, fa, fb).half().cpu())
        pairs = torch.tensor([[s[0], s[1]] for s in specs], dtype=torch.int64)
        return ClipFlows(clip, role, torch.cat(out), pairs, [s[3] for s in specs], n, False)


def _run(cache: FlowCache, jobs: list[tuple[Clip, str, PairPlan]], which, progress=None, interrupted=None
         ) -> tuple[dict[int, ClipFlows | Skipped], bool]:
    """``cache.get`` for the jobs numbered ``which``; progress counts these jobs only. (results, finished)."""
    which = list(which)
    results: dict[int, ClipFlows | Skipped] = {}
    t0 = time.perf_counter()
    computed_time, computed_n = 0.0, 0
    for done, i in enumerate(which, 1):
        if interrupted is not None and interrupted():
            return results, False
        clip, role, plan = jobs[i]
        t = time.perf_counter()
        before = cache.computed
        results[i] = cache.get(clip, role, plan)
        if cache.computed > before:
            computed_time += time.perf_counter() - t
            computed_n += 1
        if progress is not None:
            left = len(which) - done
            eta = left * (computed_time / computed_n) if computed_n else (0.0 if left == 0 else None)
            progress(done, len(which), {"phase": "flow", "clip": clip.name, "role": role,
                                        "elapsed": time.perf_counter() - t0}, eta)
    return results, True


def _in_job_order(jobs, results: dict[int, ClipFlows | Skipped]) -> tuple[list[ClipFlows], list[Skipped]]:
    got: list[ClipFlows] = []
    skipped: list[Skipped] = []
    for i in sorted(results):
        r, role = results[i], jobs[i][1]
        if isinstance(r, Skipped):
            if role != "synthetic" or not any(s.path == r.path for s in skipped):  # one report per file
                skipped.append(r)
        else:
            got.append(r)
    return got, skipped


def collect(cache: FlowCache, jobs: list[tuple[Clip, str, PairPlan]], progress=None, interrupted=None
            ) -> tuple[list[ClipFlows], list[Skipped], bool]:
    """Run ``cache.get`` over (clip, role, plan) jobs with progress; stops early when interrupted.

    ``progress(done, total, info, eta_seconds)``: info = {"phase": "flow", "clip": name, "role": role}.
    Returns (flows, skipped, finished).
    """
    results, finished = _run(cache, jobs, range(len(jobs)), progress, interrupted)
    return (*_in_job_order(jobs, results), finished)


def collect_shared(group, cache: FlowCache, jobs: list[tuple[Clip, str, PairPlan]], progress=None,
                   interrupted=None) -> tuple[list[ClipFlows], list[Skipped], bool]:
    """``collect`` split over the ranks of ``group`` (``distributed.Group``) sharing one cache folder.

    Rank r computes jobs r, r + N, ... (round robin keeps the shares even across real, generated and
    synthetic jobs), all ranks wait at a barrier, then each reads the other ranks' shards. Shards are
    only ever created by ``os.replace`` of a complete temp file and no two ranks own the same job, so
    concurrent writers cannot produce a half-written or mixed shard; a rank killed mid-write leaves a
    ``.tmp`` file that no reader opens. Progress and interruption cover this rank's share; the ranks
    then agree on stopping, since one that stopped alone would leave the others at the next barrier.
    A shard missing after the barrier (the folder is not shared between nodes) is computed here.
    """
    results, finished = _run(cache, jobs, range(group.rank, len(jobs), group.world), progress, interrupted)
    group.barrier()  # past this line every rank's shards are on disk
    if group.any(not finished):
        return (*_in_job_order(jobs, results), False)
    own_computed, own_reused = cache.computed, cache.reused
    rest, _ = _run(cache, jobs, [i for i in range(len(jobs)) if i not in results])
    results.update(rest)
    cache.reused = own_reused  # reading the other ranks' work is not reuse of an earlier run
    late = cache.computed - own_computed
    if late:
        log_.warning("rank %d computed %d flow shard(s) another rank had written: is the cache folder %s on "
                     "storage every node sees?", group.rank, late, cache.folder)
    return (*_in_job_order(jobs, results), True)
