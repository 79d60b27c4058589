"""What a WebUI "Install from URL" downloads (it clones with filter=blob:none: every file of the default branch):
the extension and its shipped weights, no training state."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tracked() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / p for p in out.decode().split("\0") if p]


def test_the_default_branch_holds_no_training_state_and_stays_small():
    tracked = [p for p in _tracked() if p.exists()]
    states = [p for p in tracked if p.name.endswith(".safetensors") and "checkpoints" in p.parts]
    assert states == [], "training state belongs in the history or elsewhere, not on the installed branch"
    weights = sum(p.stat().st_size for p in tracked if p.suffix == ".safetensors")
    total = sum(p.stat().st_size for p in tracked)
    assert weights <= 20 * 2**20, weights  # the toy model, its two discriminators and its token: 16 MB
    assert total <= 25 * 2**20, total
