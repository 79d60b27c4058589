"""Cases of one's own for ``evaluate`` (and ``toy-disc``): a prompt file and a seed list, in place of a world's
held-out captions and protocol seeds."""

from __future__ import annotations


def parse_seed_list(text: str) -> list[int]:
    """``"7,8,100-103"`` -> [7, 8, 100, 101, 102, 103]: sampling seeds of one's own (``evaluate``, ``toy-disc``)."""
    out: list[int] = []
    for item in filter(None, (t.strip() for t in str(text).split(","))):
        first, dash, last = item.partition("-")
        try:
            lo, hi = int(first), int(last) if dash else int(first)
        except ValueError:
            raise ValueError(f"seed list {text!r}: {item!r} is not a seed or a range A-B of seeds") from None
        if hi < lo:
            raise ValueError(f"seed list {text!r}: range {item!r} runs backwards")
        out.extend(range(lo, hi + 1))
    if not out:
        raise ValueError(f"seed list {text!r} names no seed")
    if len(set(out)) != len(out):
        raise ValueError(f"seed list {text!r} names a seed twice (a pair would be counted twice)")
    return out


def read_prompt_file(path) -> list[str]:
    """One prompt a line; blank lines and lines starting with ``#`` are skipped; a prompt given twice is refused."""
    from pathlib import Path

    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise ValueError(f"{path}: no prompt in it (one prompt a line)")
    twice = sorted({p for p in prompts if prompts.count(p) > 1})
    if twice:
        raise ValueError(f"{path}: prompt(s) given twice: {twice}")
    return prompts
