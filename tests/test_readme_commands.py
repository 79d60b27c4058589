"""The commands README (and docs/) show work from a fresh clone: every ``python -m motionprompt ...`` line in their
code blocks parses with the real CLI parser (built, never run), and every path it names is in the repository (a
tracked file: a fresh clone has nothing else), is made by an earlier command (its ``--out``, ``--to`` or ``--cache``,
and what lies under it), or is an UPPER-CASE placeholder for the user's own files (``CLIPS/``, ``ANIMATEDIFF_DIR``)."""

import contextlib
import io
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OUTPUT_FLAGS = ("--out", "--to", "--cache")
FILE_SUFFIX = re.compile(r"\.(safetensors|pth|txt|json|csv|md|mp4|gif|webm|png|npy)$")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _code_lines(text: str) -> list[tuple[int, str]]:
    """(line number, logical line) inside fenced code blocks, backslash continuations joined."""
    out, inside, pending, start = [], False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def readme_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after ``-m motionprompt``) of every command in the documents' code blocks, in reading order."""
    found = []
    for doc in DOCUMENTS:
        for number, line in _code_lines(doc.read_text(encoding="utf-8")):
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue
            for i in range(len(words) - 1):
                if words[i] == "-m" and words[i + 1] == "motionprompt":
                    found.append((f"{doc.relative_to(ROOT)}:{number}", words[i + 2:]))
                    break
    return found


def _tracked() -> set[str]:
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: what is on disk
        return {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*") if p.is_file()}
    return set(names.decode().split("\0")) - {""}


def _paths(argv: list[str]) -> tuple[list[str], list[str]]:
    """(paths read, paths written) named on a command line."""
    read, written = [], []
    flag = None
    for word in argv:
        if word.startswith("-"):
            flag, sep, value = word.partition("=")
            if not sep:
                continue
            word = value
        if "/" in word or FILE_SUFFIX.search(word):
            (written if flag in OUTPUT_FLAGS else read).append(word)
        flag = None
    return read, written


def _placeholder(path: str) -> bool:
    return any(PLACEHOLDER.match(part.split(".")[0]) for part in Path(path).parts)


def test_readme_shows_the_commands_it_is_tested_by():
    where = [w for w, _argv in readme_commands()]
    assert any(w.startswith("README.md") for w in where), "no python -m motionprompt command in README's code blocks"
    assert _code_lines("```bash\npython -m motionprompt a \\\n    --b c  # d\n```\n") == [(2, "python -m motionprompt a      --b c  # d")]
    assert _paths(["train", "--real", "CLIPS/", "--out", "x/y.safetensors", "--flow-size", "128", "--disc=a/b"]) == (
        ["CLIPS/", "a/b"], ["x/y.safetensors"])
    assert _placeholder("CLIPS/") and _placeholder("SHARED/flows") and not _placeholder("models/MotionPrompt/d.safetensors")


@pytest.mark.parametrize("where,argv", readme_commands(), ids=[w for w, _ in readme_commands()])
def test_readme_command_parses(where, argv):
    from motionprompt.cli.main import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: python -m motionprompt {shlex.join(argv)}\n{err.getvalue()} (exit {exc.code})")


def test_readme_commands_name_only_files_a_fresh_clone_has_or_an_earlier_command_makes():
    tracked = _tracked()
    folders = {parent.as_posix() for name in tracked for parent in Path(name).parents}
    made: list[str] = []
    missing = []
    for where, argv in readme_commands():
        read, written = _paths(argv)
        for path in read:
            clean = path.rstrip("/")
            if _placeholder(path) or clean in tracked or clean in folders:
                continue
            if any(clean == m or clean.startswith(m + "/") for m in made):
                continue
            missing.append(f"{where}: {path}")
        made += [p.rstrip("/") for p in written]
    assert not missing, "paths a fresh clone lacks and no earlier README command makes:\n" + "\n".join(missing)


@pytest.mark.diffusers
def test_a_missing_discriminator_on_the_command_line_gets_no_webui_advice(tmp_path, capsys):
    """``token-train --disc`` with a file that is not there says so, not where a WebUI's dropdown looks."""
    from motionprompt.cli.main import main

    assert main(["token-train", "--disc", str(tmp_path / "toy_guide.safetensors"), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "toy_guide.safetensors: file not found" in err, err
    assert "models folder" not in err and "MotionPrompt tab" not in err, err
