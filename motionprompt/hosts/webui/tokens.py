"""Learnable tokens in the WebUI's text conditioning, one row per frame.

Input level (default): the tokens enter CLIP's input embeddings exactly as a textual-inversion
embedding does — a ``PromptChunkFix`` consumed by the WebUI's ``EmbeddingsWithFixes`` — so gradients
run through the whole text encoder. Before trusting it we re-encode the prompts without tokens and
compare with the host's own conditioning: prompt editing, ``AND``, exotic emphasis modes or a
replaced text encoder make them differ, and then we fall back to the output level (the tokens
replace the conditioning vectors right after the prompt; no gradient through CLIP).

Both keep the host's 77-token row shape, so cond and uncond lengths stay equal (AnimateDiff's
batched cond/uncond crashes otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


class TokenBudgetError(ValueError):
    """Prompt + learnable tokens do not fit one 75-token chunk."""


@dataclass
class _TokenVectors:
    """What ``EmbeddingsWithFixes`` reads from a fix: ``vec``; ``name``/``shorthash`` for TI hashes."""

    vec: torch.Tensor
    vectors: int
    name: str = "motionprompt"
    shorthash: str | None = None  # None keeps it out of the "TI hashes" infotext


@dataclass
class _Line:
    tokens: list[int]
    multipliers: list[float]
    fixes: list
    count: int  # prompt tokens before ours (our vectors start at chunk position count + 1)


def tokenize_rows(clip, prompts: list[str], n_tokens: int) -> tuple[list[str], list[int], dict[str, _Line]]:
    """Distinct prompts, the row -> distinct index map, and each prompt's single 77-token chunk."""
    unique = list(dict.fromkeys(prompts))
    lines = {}
    for text in unique:
        chunks, count = clip.tokenize_line(text)
        room = clip.chunk_length
        if len(chunks) != 1 or count + n_tokens > room:
            raise TokenBudgetError(
                f"prompt is {count} tokens; with {n_tokens} MotionPrompt token(s) it needs more than one "
                f"{room}-token chunk. Shorten the prompt by {count + n_tokens - room} token(s) or use fewer tokens."
            )
        chunk = chunks[0]
        lines[text] = _Line(list(chunk.tokens), list(chunk.multipliers), list(chunk.fixes), count)
    index = [unique.index(t) for t in prompts]
    return unique, index, lines


class InputLevelEncoder:
    """Tokens spliced into CLIP's input embeddings through the host's textual-inversion path."""

    level = "input"

    def __init__(self, clip, prompts: list[str], n_tokens: int, post: Callable | None = None):
        from modules.sd_hijack_clip import PromptChunkFix

        self.clip = clip
        self.n_tokens = n_tokens
        self.post = post
        self.unique, self.index, self.lines = tokenize_rows(clip, prompts, n_tokens)
        self._holder = _TokenVectors(torch.zeros(n_tokens, 1), n_tokens)
        self._fixes = [[*line.fixes, PromptChunkFix(line.count, self._holder)] for line in self.lines.values()]

    def embed_init(self, word: str, n_tokens: int) -> torch.Tensor:
        vec = self.clip.encode_embedding_init_text(word, n_tokens)
        if vec.shape[0] == 0:
            raise ValueError(f"init word {word!r} has no tokens")
        reps = -(-n_tokens // vec.shape[0])
        return vec.repeat(reps, 1)[:n_tokens].detach().float()

    def encode_plain(self) -> torch.Tensor:
        """The prompts re-encoded without our tokens: must reproduce the host's rows."""
        lines = list(self.lines.values())
        return self._run([line.fixes for line in lines])

    def encode(self, tokens: torch.Tensor, post: bool = True) -> torch.Tensor:
        """Prompt rows with ``tokens``; ``post=False``: before AnimateDiff's prompt travel (what it interpolates)."""
        self._holder.vec = tokens
        try:
            rows = self._run(self._fixes)
        finally:
            self._holder.vec = tokens.detach()  # do not keep the graph alive through the holder
        return self.post(rows) if self.post and post else rows

    def _run(self, fixes: list) -> torch.Tensor:
        """One ``process_tokens`` call per distinct prompt, as the WebUI's ``get_learned_conditioning`` makes
        them (each prompt on its own, cached): the emphasis mean is taken per call, so batching prompts
        together changes rows that carry weights, and a GEMM's float rounding depends on its batch size."""
        lines = list(self.lines.values())
        zs = []
        try:
            for line, line_fixes in zip(lines, fixes, strict=True):
                self.clip.hijack.fixes = [line_fixes]
                zs.append(self.clip.process_tokens([line.tokens], [line.multipliers]))
        finally:
            self.clip.hijack.fixes = None
        return torch.cat(zs)[self.index]


class OutputLevelEncoder:
    """Tokens overwrite the conditioning vectors right after each prompt (no gradient through CLIP)."""

    level = "output"

    def __init__(self, clip, prompts: list[str], n_tokens: int, host_rows: torch.Tensor, post: Callable | None = None):
        self.clip = clip
        self.n_tokens = n_tokens
        self.post = post
        self.prompt = prompts[0]
        unique, index, lines = tokenize_rows(clip, prompts, n_tokens)
        self.base = host_rows.detach()
        self.starts = [lines[unique[i]].count + 1 for i in index]  # +1: BOS
        self.note: str | None = None

    def embed_init(self, word: str, n_tokens: int) -> torch.Tensor:
        """The init word in conditioning space: the text encoder's output at the word's positions when it
        follows the prompt (where our tokens sit). Without a usable encoder, the host's own vectors at those
        positions, with a note saying the init word was not used."""
        s = self.starts[0]
        try:
            _chunks, count = self.clip.tokenize_line(word)
            if count < 1:
                raise ValueError(f"init word {word!r} has no tokens")
            with torch.no_grad():
                z = self.clip([f"{self.prompt} {word}"])
            vec = z[0, s : s + min(count, self.clip.chunk_length - s + 1)].detach().float()
            if vec.shape[0] == 0:
                raise ValueError("no room after the prompt")
        except (AttributeError, TypeError, ValueError, RuntimeError) as exc:
            self.note = f"init word {word!r} unused at output level ({type(exc).__name__}: {exc})"
            return self.base[0, s : s + n_tokens].detach().float().clone()
        reps = -(-n_tokens // vec.shape[0])
        return vec.repeat(reps, 1)[:n_tokens].clone()

    def encode(self, tokens: torch.Tensor, post: bool = True) -> torch.Tensor:
        rows = []
        t = tokens.to(self.base.dtype)
        for r, s in enumerate(self.starts):
            row = self.base[r]
            rows.append(torch.cat([row[:s], t, row[s + self.n_tokens :]]))
        out = torch.stack(rows)
        return self.post(out) if self.post and post else out


def build_encoder(clip, prompts: list[str], n_tokens: int, host_rows: torch.Tensor, level: str = "auto",
                  post: Callable | None = None, atol: float = 1e-3):
    """The input-level encoder when it reproduces ``host_rows``; else the output level (or an error).

    Returns ``(encoder, note)``; ``note`` says why the fallback was taken, for the log and infotext.
    """
    if level in ("auto", "input"):
        reason = None
        try:
            enc = InputLevelEncoder(clip, prompts, n_tokens, post)
            with torch.no_grad():
                plain = enc.encode_plain()
            diff = (plain.float() - host_rows.float()).abs().max().item() if plain.shape == host_rows.shape else None
            if diff is not None and diff <= atol * max(1.0, host_rows.float().abs().max().item()):
                return enc, None
            reason = ("re-encoding the prompt does not reproduce the WebUI's conditioning "
                      f"({'shape ' + str(tuple(plain.shape)) if diff is None else f'max diff {diff:.3g}'}; "
                      "prompt editing, AND or a custom text encoder?)")
        except TokenBudgetError:
            raise
        except (AttributeError, ImportError, TypeError) as exc:
            reason = f"textual-inversion path unavailable ({type(exc).__name__}: {exc})"
        if level == "input":
            raise RuntimeError(f"input-level tokens impossible: {reason}")
        return OutputLevelEncoder(clip, prompts, n_tokens, host_rows, post), f"output-level tokens: {reason}"
    return OutputLevelEncoder(clip, prompts, n_tokens, host_rows, post), None
