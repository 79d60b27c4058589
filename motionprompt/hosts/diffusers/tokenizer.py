"""Tokenizers the reference host can use: HF CLIP for real model folders, a word hasher for tiny ones."""

from __future__ import annotations

import re
import zlib


class WordTokenizer:
    """Deterministic word-level tokenizer for random tiny models (no vocabulary file to download)."""

    def __init__(self, vocab_size: int = 1000, max_length: int = 77):
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.bos = vocab_size - 2
        self.eos = self.pad = vocab_size - 1

    def ids(self, text: str) -> list[int]:
        words = re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())
        return [zlib.crc32(w.encode()) % (self.vocab_size - 2) for w in words]


class HFTokenizer:
    """Adapter over a transformers CLIPTokenizer."""

    def __init__(self, tok):
        self.tok = tok
        self.max_length = int(min(tok.model_max_length, 77))
        self.bos = tok.bos_token_id
        self.eos = tok.eos_token_id
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def ids(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False).input_ids)


def layout(tokenizer, prompt_ids: list[int], n_extra: int) -> tuple[list[int], int]:
    """[BOS] prompt [extra x n] [EOS] [PAD...]; returns ids and the first extra position.

    Raises when prompt + tokens do not fit one 75-token chunk, rather than silently truncating
    (truncation would drop the learnable tokens themselves).
    """
    room = tokenizer.max_length - 2
    if len(prompt_ids) + n_extra > room:
        raise ValueError(
            f"prompt is {len(prompt_ids)} tokens; with {n_extra} MotionPrompt token(s) it exceeds the "
            f"{room}-token chunk. Shorten the prompt."
        )
    start = 1 + len(prompt_ids)
    ids = [tokenizer.bos, *prompt_ids, *([tokenizer.eos] * n_extra), tokenizer.eos]
    ids += [tokenizer.pad] * (tokenizer.max_length - len(ids))
    return ids, start
