"""Numbers for people and for JSON: NaN (a metric that has no value) never reaches a reader as NaN."""

from __future__ import annotations

import math


def json_safe(obj):
    """NaN/inf -> None, recursively, so every JSON reader (and safetensors metadata) accepts the record."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def num(v, fmt: str = ".3f") -> str:
    """A metric for a message: None/NaN (e.g. a validation split without one of the classes) reads "n/a"."""
    return "n/a" if v is None or not math.isfinite(v) else format(v, fmt)
