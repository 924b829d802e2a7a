"""Each way an operator's first start commonly fails ends in one line that says what went
wrong and what to do, a non-zero exit, and no secret (issue #15's list, as a user meets it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

MAILBOT = [sys.executable, "-m", "mailbot"]
SECRET = "s3cretpw"


def _run(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(MAILBOT_CONFIG="", MAILBOT_DNS="offline", MAILBOT_CPU_WORKERS="0")
    env.update({"MAILBOT_HOME": str(tmp_path / "home"), **extra})
    return subprocess.run(
        [*MAILBOT, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def _last_word(done: subprocess.CompletedProcess[str]) -> str:
    """The error line: the one line `mailbot:` says (serve logs its start-up above it)."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr and SECRET not in done.stderr + done.stdout
    said = [line for line in done.stderr.splitlines() if line.startswith("mailbot: ")]
    assert len(said) == 1, done.stderr
    return said[0]


def test_a_port_in_use_names_it_and_the_settings_that_move_it(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = _run(tmp_path, "serve", MAILBOT_SMTP_PORT=str(port), MAILBOT_HTTP_PORT="0")
    line = _last_word(done)
    assert "address already in use" in line and "MAILBOT_SMTP_PORT" in line


def test_a_home_that_cannot_be_made_says_to_set_mailbot_home(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    done = _run(
        tmp_path, "reply-address", "k", "a@example.com", MAILBOT_HOME=str(tmp_path / "a-file" / "x")
    )
    assert "MAILBOT_HOME" in _last_word(done)


def test_an_unknown_postgres_database_says_to_create_it(tmp_path: Path) -> None:
    probe = socket.socket()
    try:
        probe.settimeout(2)
        probe.connect(("127.0.0.1", 5432))
    except OSError:
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    finally:
        probe.close()
    url = f"postgresql+asyncpg://postgres:{SECRET}@127.0.0.1:5432/mailbot_no_such_db"
    line = _last_word(_run(tmp_path, "inbox", MAILBOT_DATABASE_URL=url))
    assert "does not exist" in line and "createdb" in line


def test_a_database_that_does_not_answer_asks_whether_it_runs(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://bob:{SECRET}@127.0.0.1:1/db"
    line = _last_word(_run(tmp_path, "inbox", MAILBOT_DATABASE_URL=url))
    assert "MAILBOT_DATABASE_URL" in line


def test_a_bogus_revision_says_which_revisions_there_are(tmp_path: Path) -> None:
    line = _last_word(_run(tmp_path, "db", "upgrade", "--revision", "bogus"))
    assert "bogus" in line and "migrations/versions" in line


def test_a_broken_settings_file_names_the_file_and_the_fault(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('domain = "unterminated\n')
    line = _last_word(_run(tmp_path, "inbox", MAILBOT_CONFIG=str(tmp_path / "bad.toml")))
    assert "TOML" in line and "line 1" in line


def test_a_malformed_address_is_refused_when_given(tmp_path: Path) -> None:
    done = _run(tmp_path, "reply-address", "k", "not an email")
    assert done.returncode == 2 and "not one valid email address" in _last_word(done)
    assert not (tmp_path / "home" / "mailbot.db").exists()  # refused before anything was made
