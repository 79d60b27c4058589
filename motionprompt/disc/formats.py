"""File-format tags and a safetensors header reader that needs neither torch nor safetensors.

The WebUI lists discriminators in its UI thread and the gradio-4 UI tests run without torch, so telling
our files from other ``.safetensors`` (LoRAs, motion modules) must not import torch: the format is
8 bytes of little-endian header length, then a JSON header whose ``__metadata__`` holds string pairs.
"""

from __future__ import annotations

import json
import os
import struct

DISC_FORMAT = "motionprompt.discriminator"
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a safetensors file, checked against the file as safetensors checks it on load: the
    tensors' byte ranges must end exactly where the file ends. Raises ValueError for anything else (random
    bytes, a truncated copy, a header that is not a JSON object)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("file too short for a safetensors header")
        (size,) = struct.unpack("<Q", head)
        if size > MAX_HEADER:
            raise ValueError("safetensors header too large")
        raw = f.read(size)
        total = os.fstat(f.fileno()).st_size
    if len(raw) != size:
        raise ValueError("file ends inside its safetensors header")
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"unreadable safetensors header: {exc}") from exc
    if not isinstance(header, dict):
        raise ValueError("safetensors header is not a JSON object")
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"safetensors header lists a tensor without byte offsets ({exc})") from exc
    if 8 + size + end != total:
        raise ValueError(f"file is {total} bytes but its safetensors header describes {8 + size + end} "
                         "(truncated or not a safetensors file)")
    return header


def read_header_metadata(path: str | os.PathLike) -> dict:
    """``__metadata__`` of a safetensors file; raises ValueError for anything that is not one (``read_header``)."""
    meta = read_header(path).get("__metadata__", {})
    return meta if isinstance(meta, dict) else {}
