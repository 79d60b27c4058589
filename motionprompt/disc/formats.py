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


def read_header_metadata(path: str | os.PathLike) -> dict:
    """``__metadata__`` of a safetensors file; raises ValueError for anything that is not one."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("file too short for a safetensors header")
        (size,) = struct.unpack("<Q", head)
        if size > MAX_HEADER:
            raise ValueError("safetensors header too large")
        raw = f.read(size)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"unreadable safetensors header: {exc}") from exc
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    return meta if isinstance(meta, dict) else {}
