"""The public surface bot authors import from `mailbot`, and the project's own checks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import mailbot

ROOT = Path(__file__).resolve().parents[1]


def test_public_names_are_sorted_and_importable() -> None:
    assert mailbot.__all__ == sorted(mailbot.__all__)
    for name in mailbot.__all__:
        assert getattr(mailbot, name) is not None


def test_what_a_bot_author_needs_is_exported() -> None:
    needed = {"Bot", "InboundMail", "Context", "Mailbot", "Router", "Bounce", "Rejection"}
    assert needed <= set(mailbot.__all__)


def test_ruff_finds_nothing() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert ruff, "ruff is a dev dependency"
    result = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
