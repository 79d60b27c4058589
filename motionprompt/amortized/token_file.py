"""The amortized token as a file: a textual-inversion embedding A1111 loads from ``embeddings/``, and ours.

A1111 1.10 (``modules/textual_inversion/textual_inversion.py``) reads a ``.safetensors`` embedding with
``safetensors.torch.load_file`` and, in ``create_embedding_from_data``, takes a plain dict of tensors (no
``string_to_param`` key, not a ``clip_l``/``clip_g`` pair) only if it holds exactly one tensor, [n, D] (a
1-D one counts as one vector). Its last dimension must equal the loaded model's token width (768 for
SD1.5) or the embedding is skipped; the file name without extension is the word that triggers it. The
header metadata is not read there, so ours rides along: the format tag, the name, and the training record
(discriminator name and hash, flow settings, data, steps, init word, validation).

Only safetensors are ever opened here (a pickle can run code); every refusal says which file and why.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

FORMAT = "motionprompt.token"
FORMAT_VERSION = 1
TENSOR_KEY = "emb_params"  # any single key works for A1111; this is the common one for SD1.5 embeddings
SUFFIX = ".safetensors"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class TokenFileError(ValueError):
    def __init__(self, path, reason: str):
        super().__init__(f"token {os.fspath(path)!s}: {reason}")  # hosts say "MotionPrompt" once
        self.path, self.reason = os.fspath(path), reason


@dataclass
class TokenFile:
    vectors: object  # torch.Tensor [n, D], float32
    name: str  # the word that triggers it in a WebUI prompt (the file name without extension)
    meta: dict = field(default_factory=dict)  # our metadata, JSON values decoded; {} for a foreign embedding
    path: str | None = None

    @property
    def ours(self) -> bool:
        return self.meta.get("format") == FORMAT


def check_name(name: str) -> str:
    """The prompt word: letters, digits, ``_``, ``-``, ``.``; no spaces (a two-word name splits in a prompt)."""
    if not isinstance(name, str) or not _NAME.match(name) or name.lower().endswith(SUFFIX):
        raise ValueError(f"token name {name!r}: use letters, digits, '_', '-' or '.', starting with a letter or "
                         "digit and without spaces (it is the word you type in a prompt)")
    return name


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_INT_KEYS = ("format_version", "n_tokens", "width")


def _header(meta: dict) -> dict[str, str]:
    """Strings stay strings; anything else is stored as JSON and listed under ``json_keys`` so it reads back
    as exactly what was written."""
    out, encoded = {}, []
    for k, v in meta.items():
        if isinstance(v, str):
            out[k] = v
        else:
            out[k] = json.dumps(v, sort_keys=True, default=str)
            encoded.append(k)
    out["json_keys"] = json.dumps(sorted(encoded))
    return out


def _decoded(raw: dict) -> dict:
    try:
        encoded = set(json.loads(raw.get("json_keys", "[]")))
    except json.JSONDecodeError:
        encoded = set()
    out = {}
    for k, v in raw.items():
        if k == "json_keys":
            continue
        try:
            out[k] = json.loads(v) if k in encoded else int(v) if k in _INT_KEYS else v
        except (json.JSONDecodeError, ValueError):
            out[k] = v
    return out


def save_token(path: str | os.PathLike, vectors, meta: dict | None = None) -> Path:
    """Write ``vectors`` [n, D] as an embedding A1111 loads (one float32 tensor) with ``meta`` in the header.

    The name is the file name; ``meta`` values that are not strings are stored as JSON."""
    import torch

    from ..files.atomic import save_safetensors

    path = Path(path)
    if path.suffix != SUFFIX:
        raise ValueError(f"tokens are exported as {SUFFIX} (what the WebUI loads without unpickling), got {path.name}")
    name = check_name(path.name[: -len(SUFFIX)])
    vec = torch.as_tensor(vectors).detach().to("cpu", torch.float32)
    if vec.dim() != 2 or vec.shape[0] < 1:
        raise ValueError(f"token vectors must be [n, width], got {tuple(vec.shape)}")
    if not torch.isfinite(vec).all():
        raise ValueError("token vectors hold NaN or infinite values")
    fixed = ("format", "format_version", "name", "n_tokens", "width", "json_keys")
    header = _header({k: v for k, v in (meta or {}).items() if k not in fixed})
    header.update(format=FORMAT, format_version=str(FORMAT_VERSION), name=name, n_tokens=str(vec.shape[0]),
                  width=str(vec.shape[1]))
    return save_safetensors({TENSOR_KEY: vec.contiguous()}, header, path)


def read_metadata(path: str | os.PathLike) -> dict:
    """Our header metadata, decoded, without torch (listings); {} for a safetensors file that is not ours.
    Raises TokenFileError for a file that is not safetensors at all."""
    from ..disc.formats import read_header_metadata

    try:
        raw = read_header_metadata(path)
    except (OSError, ValueError) as exc:
        raise TokenFileError(path, f"not a readable safetensors file: {exc}") from exc
    if raw.get("format") != FORMAT:
        return {}
    return _decoded(raw)


def is_token_file(path: str | os.PathLike) -> bool:
    try:
        return bool(read_metadata(path))
    except TokenFileError:
        return False


def load_token(path: str | os.PathLike, width: int | None = None, n_tokens: int | None = None) -> TokenFile:
    """A token file (ours, or any single-tensor safetensors embedding) -> ``TokenFile`` with float32 vectors.

    Follows A1111's rules for a safetensors embedding and says what is wrong instead of skipping: one tensor
    only, 1-D or 2-D, finite; ``width``/``n_tokens`` (when given) must match."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise TokenFileError(path, "file not found")
    if path.suffix.lower() != SUFFIX:
        raise TokenFileError(path, f"only {SUFFIX} token files are loaded (.pt/.bin embeddings are pickles and "
                             "are never opened here)")
    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            raw = f.metadata() or {}
            keys = list(f.keys())
            tensors = {k: f.get_tensor(k) for k in keys}
    except Exception as exc:  # safetensors' own error type differs between versions
        raise TokenFileError(path, f"not a readable safetensors file (corrupt or truncated?): {exc}") from exc
    if len(keys) != 1:
        raise TokenFileError(path, f"an embedding holds exactly one tensor, this file has {len(keys)} "
                             f"({', '.join(keys[:4])}); the WebUI refuses it too")
    vec = tensors[keys[0]]
    if vec.dim() == 1:
        vec = vec.unsqueeze(0)
    if vec.dim() != 2 or vec.shape[0] < 1 or not vec.is_floating_point():
        raise TokenFileError(path, f"tensor {keys[0]!r} is {tuple(vec.shape)} {vec.dtype}; expected float [n, width]")
    vec = vec.float()
    if not bool(vec.isfinite().all()):
        raise TokenFileError(path, "holds NaN or infinite values")
    if width is not None and vec.shape[1] != width:
        hint = {768: "SD1.x", 1024: "SD2.x"}
        raise TokenFileError(path, f"token vectors are {vec.shape[1]} wide ({hint.get(vec.shape[1], 'another model')}) "
                             f"but this model's text encoder takes {width}"
                             + (f" ({hint[width]})" if width in hint else ""))
    if n_tokens is not None and vec.shape[0] != n_tokens:
        raise TokenFileError(path, f"holds {vec.shape[0]} token vector(s), {n_tokens} expected")
    meta = _decoded(raw) if raw.get("format") == FORMAT else {}
    if isinstance(meta.get("format_version"), int) and meta["format_version"] > FORMAT_VERSION:
        raise TokenFileError(path, f"format version {meta['format_version']} is newer than this extension "
                             f"({FORMAT_VERSION}); update it")
    name = path.name[: -len(SUFFIX)]
    return TokenFile(vec, name, meta, os.fspath(path))


def token_count(path: str | os.PathLike) -> int:
    """How many vectors a token file holds (its header, no tensor data read when it is ours)."""
    meta = read_metadata(path)
    if meta.get("n_tokens"):
        return int(meta["n_tokens"])
    return int(load_token(path).vectors.shape[0])


def with_start_token(cfg, path: str | os.PathLike | None):
    """A GuidanceConfig that starts from the token file at ``path``: ``start_token`` set and ``n_tokens``
    taken from the file (the host must be built for that many). ``path`` None/"" leaves ``cfg`` as it is."""
    if not path:
        return cfg
    path = os.fspath(path)
    cfg.start_token = path
    cfg.n_tokens = token_count(path)
    return cfg.validate()


def start_tokens(cfg):
    """``MotionGuide``'s ``start_tokens`` for ``cfg.start_token``: None without one, else a callable that reads the
    file when the guide asks, checked against the host's token width (the engine opens no file)."""
    if not cfg.start_token:
        return None
    path = cfg.start_token
    return lambda width: load_token(path, width=width).vectors
