"""State has a home: what a node keeps (the SQLite file, the TLS pair, blobs, keys) lands in
MAILBOT_HOME, by default ./mailbot-data, never loose in the directory the command ran in."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from mailbot.config import Settings


def _mailbot(cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(MAILBOT_CONFIG="", MAILBOT_DNS="offline", MAILBOT_CPU_WORKERS="0", **extra)
    return subprocess.run(
        [sys.executable, "-m", "mailbot", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_writing_command_in_an_empty_directory_keeps_its_state_in_mailbot_data(
    tmp_path: Path,
) -> None:
    made = _mailbot(tmp_path, "reply-address", "k-1", "ann@example.com")
    assert made.returncode == 0, made.stderr
    home = tmp_path / "mailbot-data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mailbot-data"]
    assert (home / "mailbot.db").is_file()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700  # keys and mail: the owner's only
    shown = _mailbot(tmp_path, "conversation", "show", "k-1")
    assert shown.returncode == 0 and "ann@example.com" in shown.stdout, shown.stderr


def test_mailbot_home_moves_everything_and_config_show_says_where(tmp_path: Path) -> None:
    made = _mailbot(tmp_path, "reply-address", "k-1", "ann@example.com", MAILBOT_HOME="state")
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "state" / "mailbot.db").is_file()
    assert not (tmp_path / "mailbot-data").exists()
    shown = _mailbot(tmp_path, "config", "show", "--json", MAILBOT_HOME="state")
    rows = {row["name"]: row for row in map(json.loads, shown.stdout.splitlines())}
    assert rows["home"]["value"] == str(tmp_path / "state") and rows["home"]["source"] == "env"
    assert rows["database_url"]["value"].endswith(f"{tmp_path}/state/mailbot.db")


def test_a_reading_command_with_no_state_says_so_and_makes_no_home(tmp_path: Path) -> None:
    shown = _mailbot(tmp_path, "inbox")
    assert shown.returncode == 2 and "no database at" in shown.stderr, shown.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_home_of_a_named_sqlite_file_is_its_folder_and_postgres_uses_mailbot_data(
    tmp_path: Path,
) -> None:
    beside = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'db' / 'x.db'}")
    assert beside.home_dir == tmp_path / "db"
    chosen = Settings(home=tmp_path / "h", database_url="postgresql+asyncpg://u@h/d")
    assert chosen.home_dir == tmp_path / "h"
    assert Settings(database_url="postgresql+asyncpg://u@h/d").home_dir.name == "mailbot-data"
    # Settled once and absolute, so the worker's child process finds the same folder.
    assert Settings(home=Path("rel")).home_dir == Path.cwd() / "rel"
