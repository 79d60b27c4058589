"""The discriminator's data set: real, generated and synthetic flows gathered from the cache, split by clip.

Validation is split by clip, not by pair: pairs of one clip are near-duplicates, so a pair-level split
would measure memorisation. Synthetic negatives go with the real clip they were made from. A side with
a single clip falls back to a pair-level split, with a note that its validation numbers are optimistic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .clips import Clip, Skipped, find_clips
from .flow_cache import ClipFlows, FlowCache, PairPlan, collect


class DataError(ValueError):
    """No usable data on a side; the message says which folders and why."""


@dataclass
class FlowSet:
    flows: torch.Tensor  # [N, 2, H, W] float16 normalized flow
    labels: torch.Tensor  # [N] float32: 1 real, 0 fake
    val: torch.Tensor  # [N] bool: validation sample
    source: torch.Tensor  # [N] int64 index into source_names
    source_names: list[str]
    skipped: list[Skipped]
    summary: dict
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False


def _describe_empty(side: str, folders, found: int, skipped: list[Skipped]) -> str:
    where = ", ".join(str(f) for f in folders) or "(no folder given)"
    msg = f"no usable {side} clips in {where}: {found} clip(s) found"
    if skipped:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:5])
        more = f" (+{len(skipped) - 5} more)" if len(skipped) > 5 else ""
        msg += f", {len(skipped)} skipped ({reasons}{more})"
    return msg + ". Videos (mp4, webm, gif, avi, mov, mkv) or folders of >= 2 frame images are searched recursively."


def _split(groups: list[list[int]], fraction: float, rng: np.random.Generator, side: str,
           notes: list[str]) -> tuple[set[int], list[str]]:
    """Indices of validation samples: whole clips when there are >= 2, else a random share of pairs."""
    val: set[int] = set()
    if fraction <= 0 or not groups:
        return val, []
    if len(groups) == 1:
        idx = np.array(groups[0])
        k = max(1, round(fraction * len(idx))) if len(idx) > 1 else 0
        val.update(int(i) for i in rng.permutation(idx)[:k])
        notes.append(f"only one {side} clip: its validation pairs come from the training clip, so validation "
                     "numbers are optimistic; add more clips")
        return val, []
    k = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    chosen = sorted(int(i) for i in rng.permutation(len(groups))[:k])
    for c in chosen:
        val.update(groups[c])
    return val, chosen


def build_flow_set(
    cache: FlowCache,
    real: list,
    generated: list | None = None,
    corruptions: list[str] | tuple[str, ...] = (),
    pairs_per_clip: int = 32,
    synthetic_per_clip: int | None = None,
    gap: tuple[int, int] = (1, 4),
    crop_min: float = 0.7,
    seed: int = 0,
    val_fraction: float = 0.2,
    exclude=(),
    progress=None,
    interrupted=None,
    collect_jobs=collect,
) -> FlowSet:
    """Find clips, get their flows through ``cache``, label and split them. Raises ``DataError``.

    ``synthetic_per_clip`` (per real clip) defaults to ``pairs_per_clip`` without generated folders and
    half of it with them, so synthetic negatives complement rather than swamp real generated videos.
    ``collect_jobs`` is ``flow_cache.collect`` or, under torchrun, its rank-sharded ``collect_shared``;
    everything after it is a pure function of the files and the seed, hence the same on every rank.
    """
    generated = list(generated or [])
    corruptions = tuple(corruptions)
    if not generated and not corruptions:
        raise DataError("no fake side: give folders of generated videos and/or synthetic negatives "
                        "(shuffle, jump, stutter, flicker, jitter)")
    if not 0 <= val_fraction < 1:
        raise DataError(f"validation fraction must be in [0, 1), got {val_fraction}")
    if pairs_per_clip < 1:
        raise DataError("pairs per clip must be >= 1")
    if synthetic_per_clip is None:
        synthetic_per_clip = pairs_per_clip if not generated else max(1, pairs_per_clip // 2)
    # a generated folder inside a real one (AnimateDiff outputs under a footage folder) must not count as real
    real_clips, real_skipped = find_clips(real, [*exclude, *(generated or [])])
    gen_clips, gen_skipped = find_clips(generated, exclude) if generated else ([], [])
    if not real_clips:
        raise DataError(_describe_empty("real", real, 0, real_skipped))
    if generated and not gen_clips:
        raise DataError(_describe_empty("generated", generated, 0, gen_skipped))
    base = {"gap_min": gap[0], "gap_max": gap[1], "crop_min": crop_min, "seed": seed}
    jobs: list[tuple[Clip, str, PairPlan]] = [(c, "real", PairPlan(pairs_per_clip, **base)) for c in real_clips]
    jobs += [(c, "generated", PairPlan(pairs_per_clip, **base)) for c in gen_clips]
    if corruptions and synthetic_per_clip > 0:
        jobs += [(c, "synthetic", PairPlan(synthetic_per_clip, **base, corruptions=corruptions)) for c in real_clips]
    got, skipped_now, finished = collect_jobs(cache, jobs, progress, interrupted)
    skipped = real_skipped + gen_skipped + skipped_now
    notes: list[str] = []
    if not finished:
        empty = torch.zeros(0)
        return FlowSet(empty, empty, empty.bool(), empty.long(), [], skipped, {}, notes, interrupted=True)
    by_role: dict[str, list[ClipFlows]] = {"real": [], "generated": [], "synthetic": []}
    for cf in got:
        by_role[cf.role].append(cf)
    real_skip = [s for s in skipped if s in real_skipped or any(s.path == c.path for c in real_clips)]
    gen_skip = [s for s in skipped if s not in real_skip]
    if not by_role["real"]:
        raise DataError(_describe_empty("real", real, len(real_clips), real_skip))
    if generated and not by_role["generated"]:
        raise DataError(_describe_empty("generated", generated, len(gen_clips), gen_skip))
    if not by_role["generated"] and not by_role["synthetic"]:
        raise DataError("no fake samples: every real clip was too short for the chosen synthetic negatives")

    ordered = by_role["real"] + by_role["generated"] + by_role["synthetic"]
    names = sorted({s for cf in ordered for s in cf.sources})
    flows, labels, source, offsets = [], [], [], {}
    start = 0
    for cf in ordered:
        flows.append(cf.flows)
        labels += [1.0 if cf.role == "real" else 0.0] * len(cf.sources)
        source += [names.index(s) for s in cf.sources]
        offsets.setdefault(cf.clip.path, {})[cf.role] = list(range(start, start + len(cf.sources)))
        start += len(cf.sources)
    shapes = {tuple(f.shape[1:]) for f in flows}
    if len(shapes) != 1:
        raise DataError(f"flows have different shapes {sorted(shapes)}; clear the flow cache folder")

    rng = np.random.default_rng([seed, 7])
    real_groups = [offsets[cf.clip.path]["real"] + offsets[cf.clip.path].get("synthetic", [])
                   for cf in by_role["real"]]
    gen_groups = [offsets[cf.clip.path]["generated"] for cf in by_role["generated"]]
    val_real, real_val_clips = _split(real_groups, val_fraction, rng, "real", notes)
    val_gen, gen_val_clips = _split(gen_groups, val_fraction, rng, "generated", notes)
    val = torch.zeros(start, dtype=torch.bool)
    val[sorted(val_real | val_gen)] = True
    labels_t = torch.tensor(labels)
    if val_fraction > 0 and not ((labels_t[val] == 1).any() and (labels_t[val] == 0).any()):
        notes.append("validation set lacks a class; validation metrics will be empty")

    def counts(mask: torch.Tensor) -> dict:
        src = torch.tensor(source)[mask]
        return {n: int((src == i).sum()) for i, n in enumerate(names) if (src == i).any()}

    summary = {
        "real_folders": [str(f) for f in real],
        "generated_folders": [str(f) for f in generated],
        "corruptions": list(corruptions),
        "real_clips": len(by_role["real"]),
        "generated_clips": len(by_role["generated"]),
        "skipped_files": len(skipped),
        "samples": counts(torch.ones(start, dtype=torch.bool)),
        "train_samples": counts(~val),
        "val_samples": counts(val),
        "val_clips": [by_role["real"][i].clip.name for i in real_val_clips]
        + [by_role["generated"][i].clip.name for i in gen_val_clips],
        "flow_shape": list(next(iter(shapes))),
        "pairs_per_clip": pairs_per_clip,
        "synthetic_per_clip": synthetic_per_clip if corruptions else 0,
        "gap": list(gap),
        "crop_min": crop_min,
        "data_seed": seed,
        "notes": notes,
    }
    return FlowSet(torch.cat(flows), labels_t, val, torch.tensor(source, dtype=torch.int64), names,
                   skipped, summary, notes)
