"""Where MotionPrompt's files live inside a WebUI, and what the user can pick from."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

DISC_SUFFIX = ".safetensors"
RESUME_SUFFIX = ".resume.safetensors"  # the trainer's resumable state beside each discriminator


def models_dir() -> Path:
    """``--motionprompt-models-dir`` if given, else ``<models>/MotionPrompt`` (honours ``--models-dir``)."""
    from modules import paths, shared

    override = getattr(shared.cmd_opts, "motionprompt_models_dir", None)
    return Path(override) if override else Path(paths.models_path) / "MotionPrompt"


def flow_weights_dirs() -> list[Path]:
    """RAFT ``.pth`` files are looked up in ``MotionPrompt/flow`` and the MotionPrompt folder itself."""
    root = models_dir()
    return [root / "flow", root]


def list_discriminators() -> list[str]:
    """Discriminators only, told apart by their safetensors header (no torch, no tensor read): not the
    trainer's ``*.resume.safetensors`` state, not other safetensors files (LoRAs, motion modules) without our
    format tag, and not a file whose header is unreadable or does not match its size (random bytes, a
    truncated copy): those are logged once instead."""
    root = models_dir()
    if not root.is_dir():
        return []
    found = [p.relative_to(root).as_posix() for p in root.rglob(f"*{DISC_SUFFIX}")
             if ".tmp" not in p.name and not p.name.endswith(RESUME_SUFFIX) and _is_discriminator(p)]
    return sorted(found, key=str.lower)


_UNREADABLE_SEEN: set = set()


def _is_discriminator(path: Path) -> bool:
    from ...disc.formats import DISC_FORMAT, read_header_metadata

    try:
        return read_header_metadata(path).get("format") == DISC_FORMAT
    except (OSError, ValueError) as exc:
        with contextlib.suppress(OSError):
            key = (str(path), path.stat().st_mtime_ns)
            if key not in _UNREADABLE_SEEN:  # once per file version, not on every refresh
                _UNREADABLE_SEEN.add(key)
                logging.getLogger("motionprompt").warning("MotionPrompt: %s is not listed: %s", path, exc)
        return False


def resolve_discriminator(name: str) -> Path:
    """A name from the dropdown (relative to the models folder) or an absolute path from the API."""
    path = Path(name)
    return path if path.is_absolute() else models_dir() / name


def offline() -> bool:
    from modules import shared

    return bool(getattr(shared.cmd_opts, "motionprompt_offline", False))


def allow_download() -> bool:
    from modules import shared

    return not offline() and bool(shared.opts.data.get("motionprompt_allow_download", False))


def tokens_dir() -> Path:
    """Where the tab trains motion tokens (one folder per token name) and its Export section finds them."""
    return models_dir() / "tokens"


def ensure_models_dir() -> None:
    with contextlib.suppress(OSError):  # read-only installs: the listing simply stays empty
        os.makedirs(models_dir(), exist_ok=True)


def default_fake_dir() -> str:
    """AnimateDiff saves to <outdir_txt2img_samples>/AnimateDiff: its own videos are the natural negatives."""
    try:
        from modules import shared

        base = shared.opts.data.get("outdir_txt2img_samples") or "outputs/txt2img-images"
    except Exception:
        base = "outputs/txt2img-images"
    return str(Path(base) / "AnimateDiff")


DEFAULT_PROMPTS = Path(__file__).with_name("default_prompts.txt")


def default_prompts() -> str:
    """The shipped prompt list (everyday motion) the clip and token sections start with."""
    lines = DEFAULT_PROMPTS.read_text(encoding="utf-8").splitlines()
    return "\n".join(s.strip() for s in lines if s.strip() and not s.strip().startswith("#"))
