"""What an operator sees when something is wrong (#15): one line saying what and what to do,
a non-zero exit, and never a password, whatever the case. Real subprocesses throughout."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import POSTGRES_URL

MAILBOT = [sys.executable, "-m", "mailbot"]
SECRETS = ("s3cretpw", "relaypw")
# Every case runs with a password in the relay URL; the database ones in that URL too.
RELAY = "smtp://u:relaypw@127.0.0.1:1"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(
        MAILBOT_HOME=str(tmp_path / "home"),
        MAILBOT_CPU_WORKERS="0",
        MAILBOT_CONFIG="",
        MAILBOT_DNS="offline",
        MAILBOT_RELAY=RELAY,
    )
    env.update(extra)
    return env


def _run(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAILBOT, *args],
        env=_env(tmp_path, **extra),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_clear_line(done: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The last line on stderr is mailbot's word on it; nothing else but log lines before it."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, (done.returncode, done.stderr)
    assert lines and lines[-1].startswith("mailbot: "), done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[-1], (word, lines[-1])
    for secret in SECRETS:
        assert secret not in done.stdout + done.stderr
    return lines[-1]


def _postgres_answers() -> bool:
    parts = urlsplit(POSTGRES_URL)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2).close()
    except OSError:
        return False
    return True


def test_a_database_nobody_listens_for_names_the_settings_to_check(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://bob:s3cretpw@127.0.0.1:1/db"
    done = _run(tmp_path, "inbox", MAILBOT_DATABASE_URL=url)
    assert len(done.stderr.strip().splitlines()) == 1
    _one_clear_line(done, 1, "Connect call failed", "MAILBOT_DATABASE_URL")


def test_an_unknown_postgres_database_is_named(tmp_path: Path) -> None:
    if not _postgres_answers():
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL}")
    parts = urlsplit(POSTGRES_URL)
    url = f"postgresql+asyncpg://{parts.username}:s3cretpw@{parts.netloc.split('@')[-1]}/no_such_db"
    for command in (["inbox"], ["db", "upgrade"]):
        done = _run(tmp_path, *command, MAILBOT_DATABASE_URL=url)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        _one_clear_line(done, 1, 'database "no_such_db" does not exist', "MAILBOT_DATABASE_URL")


def test_a_revision_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    done = _run(tmp_path, "db", "upgrade", "--revision", "bogus")
    _one_clear_line(done, 1, "'bogus'", "'head'")


def test_a_broken_settings_file_is_named_and_exits_2(tmp_path: Path) -> None:
    toml = tmp_path / "mailbot.toml"
    toml.write_text('domain = "reply.example.org"\nrelay = = 1\nsmtp_port = 2526\n')
    done = _run(tmp_path, "inbox", MAILBOT_CONFIG=str(toml))
    _one_clear_line(done, 2, str(toml), "not valid TOML", "line 2")
    # Found in the working directory, without MAILBOT_CONFIG, it is read and named the same.
    env = _env(tmp_path)
    del env["MAILBOT_CONFIG"]
    done = subprocess.run(
        [*MAILBOT, "inbox"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    _one_clear_line(done, 2, "mailbot.toml is not valid TOML")


def test_a_home_that_cannot_be_made_says_where_state_goes(tmp_path: Path) -> None:
    # A file where a folder must be: refused whoever runs the tests (root ignores modes).
    (tmp_path / "a-file").write_text("")
    done = _run(tmp_path, "db", "upgrade", MAILBOT_HOME=str(tmp_path / "a-file" / "home"))
    _one_clear_line(done, 1, "Not a directory", "MAILBOT_HOME")
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        done = _run(tmp_path, "db", "upgrade", MAILBOT_HOME=str(locked / "home"))
        _one_clear_line(done, 1, "Permission denied", "MAILBOT_HOME")


def test_a_port_in_use_is_named_with_the_setting_to_change(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = _run(tmp_path, "serve", MAILBOT_SMTP_HOST="127.0.0.1", MAILBOT_SMTP_PORT=port)
    _one_clear_line(done, 1, "address already in use", port, "MAILBOT_SMTP_PORT")


def test_settings_out_of_range_or_misspelt_and_lists_given_with_commas(tmp_path: Path) -> None:
    _one_clear_line(_run(tmp_path, "inbox", MAILBOT_SMTP_PORT="99999"), 2, "MAILBOT_SMTP_PORT")
    _one_clear_line(_run(tmp_path, "serve", "--smtp-port", "99999"), 2, "MAILBOT_SMTP_PORT")
    assert not (tmp_path / "home").exists()  # refused before anything was made
    done = _run(tmp_path, "config", "check", MAILBOT_EXTRA_DOMAINS="a.test,b.test")
    assert done.returncode == 0, done.stderr
    shown = _run(tmp_path, "config", "show", MAILBOT_EXTRA_DOMAINS="a.test,b.test").stdout
    assert '["a.test", "b.test"]' in shown
    done = _run(tmp_path, "config", "check", MAILBOT_DOMIAN="x.test")
    assert "MAILBOT_DOMIAN (did you mean MAILBOT_DOMAIN?)" in done.stderr


def test_a_reply_address_for_something_that_is_not_an_email_is_refused(tmp_path: Path) -> None:
    done = _run(tmp_path, "reply-address", "k-1", "not an email")
    _one_clear_line(done, 2, "'not an email'", "@")
    assert not done.stdout
    assert not (tmp_path / "home" / "mailbot.db").exists()  # refused before anything was made


def test_debug_shows_the_traceback_with_the_password_hidden(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://bob:s3cretpw@127.0.0.1:1/db"
    for args, extra in (
        (["--debug", "inbox"], {}),
        (["inbox"], {"MAILBOT_DEBUG": "1"}),
    ):
        done = _run(tmp_path, *args, MAILBOT_DATABASE_URL=url, **extra)
        assert done.returncode == 1
        assert "Traceback (most recent call last)" in done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("mailbot: ")
        assert "s3cretpw" not in done.stderr and "relaypw" not in done.stderr
    done = _run(tmp_path, "inbox", MAILBOT_DATABASE_URL=url, MAILBOT_DEBUG="0")
    assert "Traceback" not in done.stderr  # 0 means off
    # A settings error gets its traceback too.
    done = _run(tmp_path, "--debug", "inbox", MAILBOT_SMTP_PORT="99999")
    assert done.returncode == 2 and "Traceback" in done.stderr
