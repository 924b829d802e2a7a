"""The package as a user installs it: the wheel, built from this tree and unpacked outside
it, runs from an empty directory (migrations and bots inside it, no top-level ``bots``)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import aiosmtplib

from mailbot.testing import build_mail

ROOT = Path(__file__).resolve().parents[1]


def _wheel(out: Path) -> Path:
    # No build isolation: hatchling is in the dev lock, so this works offline.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    [built] = out.glob("mailbot_server-*.whl")
    return built


def test_the_wheel_holds_the_package_its_bots_and_migrations_and_nothing_generic(
    tmp_path: Path,
) -> None:
    built = _wheel(tmp_path / "dist")
    names = zipfile.ZipFile(built).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"mailbot"}
    assert "mailbot/bots/default.py" in names
    assert any(n.startswith("mailbot/migrations/versions/0001") for n in names)
    assert "mailbot/web/static/app.js" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)

    site, empty = tmp_path / "site", tmp_path / "empty"
    zipfile.ZipFile(built).extractall(site)
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(PYTHONPATH=str(site), MAILBOT_CONFIG="", MAILBOT_DNS="offline")

    def mailbot(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mailbot", *args], cwd=empty, env=env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    where = subprocess.run(
        [sys.executable, "-c", "import mailbot; print(mailbot.__file__)"],
        cwd=empty, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(site))  # the unpacked wheel, not this tree
    listed = mailbot("bots")
    assert listed.returncode == 0 and "comments" in listed.stdout, listed.stderr
    made = mailbot("reply-address", "k-1", "ann@example.com")
    assert made.returncode == 0 and made.stdout.startswith("reply+"), made.stderr
    shown = mailbot("conversation", "show", "k-1")
    assert shown.returncode == 0 and "ann@example.com" in shown.stdout, shown.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_installed_in_a_fresh_venv_serve_runs_from_an_empty_directory_and_takes_a_reply(
    tmp_path: Path,
) -> None:
    """As a user installs it: a new venv outside the checkout, the runtime lock alone (no
    test tools), then the wheel; `mailbot serve` in an empty directory receives a reply."""
    built = _wheel(tmp_path / "dist")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    subprocess.run(
        [*pip, "--require-hashes", "-r", str(ROOT / "requirements.txt")],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    subprocess.run([*pip, "--no-deps", str(built)], check=True, capture_output=True, timeout=300)

    empty = tmp_path / "empty"
    empty.mkdir()
    smtp_port, http_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILBOT_", "PYTHON"))}
    env.update(
        MAILBOT_CONFIG="",
        MAILBOT_DNS="offline",
        MAILBOT_SMTP_PORT=str(smtp_port),
        MAILBOT_HTTP_PORT=str(http_port),
    )
    mailbot = str(venv / "bin" / "mailbot")

    def run(*args: str) -> str:
        done = subprocess.run(
            [mailbot, *args], cwd=empty, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import mailbot; print(mailbot.__file__)"],
        cwd=empty, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(venv))  # the installed wheel, not this tree
    run("reply-address", "issue-1", "maintainer@example.com")
    address = run("reply-address", "issue-1", "ann@example.com").strip()
    server = await asyncio.create_subprocess_exec(
        mailbot, "serve", cwd=empty, env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert server.stderr is not None
        async with asyncio.timeout(120):
            while b"HTTP listening" not in await server.stderr.readline():
                pass
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port, start_tls=False) as smtp:
            await smtp.sendmail(
                "ann@example.com",
                [address],
                build_mail("ann@example.com", address, "Fixed in the installed wheel."),
            )
        async with asyncio.timeout(60):
            while "Fixed in the installed wheel." not in run("conversation", "show", "issue-1"):
                await asyncio.sleep(0.2)
    finally:
        server.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            rest = await server.stderr.read() if server.stderr else b""
            code = await server.wait()
    assert code == 0 and b"Traceback" not in rest, rest.decode()
    home = empty / "mailbot-data"
    assert sorted(p.name for p in empty.iterdir()) == ["mailbot-data"]  # nothing loose
    assert (home / "mailbot.db").exists() and (home / "smtp-selfsigned.crt").exists()
