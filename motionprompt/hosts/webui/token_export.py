"""A trained token into the WebUI: copied into ``embeddings/`` (its record travels in the safetensors header), the
embedding database reloaded so its name works in the next prompt, the accordion's token lists refreshed.

A1111 (and Forge ``previous``) reload the database at the start of every generation when the folder changed
(``EmbeddingDatabase.load_textual_inversion_embeddings``, called from ``process_images_inner``); we force it at
once, so the Textual Inversion list and the name's hash are right before anyone generates.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ...amortized import token_file
from .embeddings import embeddings_dir, list_tokens

log = logging.getLogger("motionprompt")

#: the accordion's token dropdown per tab (txt2img, img2img), recorded when built (a UI reload replaces them): the
#: MotionPrompt tab refreshes them after an export
DROPDOWNS: dict = {}


def export_token(src: str | Path, name: str) -> Path:
    """``src`` (a token file) as ``embeddings/<name>.safetensors``; returns the new file."""
    tok = token_file.load_token(src)
    meta = {k: v for k, v in tok.meta.items() if k not in ("format", "format_version", "name", "n_tokens", "width")}
    dest = embeddings_dir() / f"{token_file.check_name(name)}{token_file.SUFFIX}"
    path = token_file.save_token(dest, tok.vectors, meta)
    reload_embeddings()
    return path


def reload_embeddings() -> bool:
    """Force the WebUI's embedding database to re-read its folders; False (logged) where it has none."""
    try:
        from modules import sd_hijack

        sd_hijack.model_hijack.embedding_db.load_textual_inversion_embeddings(force_reload=True)
        return True
    except Exception as exc:  # the file is written; the WebUI reloads by itself at the next generation
        log.warning("MotionPrompt: could not reload the embeddings (%s: %s); the next generation will", type(exc).__name__, exc)
        return False


def dropdown_updates(picked: str | None = None) -> list:
    """One update per recorded accordion dropdown: the token files now, ``picked`` (a file name) selected."""
    import gradio as gr

    choices = list_tokens()
    value = picked if picked in choices else None
    return [gr.update(choices=choices, value=value) if value else gr.update(choices=choices) for _ in DROPDOWNS.values()]
