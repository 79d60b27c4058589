"""Where token files live: the folder A1111 loads embeddings from (``--embeddings-dir``, default
``<data>/embeddings``), so one file serves both ways of using it, typed by name in a prompt or picked in the
accordion. No torch and nothing of ours but the file format: the UI thread and ``args`` both read it.
"""

from __future__ import annotations

from pathlib import Path

from ...amortized import token_file


def embeddings_dir() -> Path:
    from modules import paths, shared

    override = getattr(shared.cmd_opts, "embeddings_dir", None)
    return Path(override) if override else Path(paths.data_path) / "embeddings"


def list_tokens() -> list[str]:
    """MotionPrompt token files in the embeddings folder (other embeddings are not offered)."""
    return token_files(embeddings_dir())


def token_files(root: Path) -> list[str]:
    """MotionPrompt token files under ``root``, relative to it, told apart by their header (not other embeddings,
    not a token run's state, not a file being written)."""
    if not root.is_dir():
        return []
    found = [p.relative_to(root).as_posix() for p in root.rglob(f"*{token_file.SUFFIX}")
             if ".tmp" not in p.name and token_file.is_token_file(p)]
    return sorted(found, key=str.lower)


def resolve_token(name: str) -> Path:
    """A name from the dropdown (relative to the embeddings folder) or an absolute path from the API."""
    path = Path(name)
    return path if path.is_absolute() else embeddings_dir() / name
