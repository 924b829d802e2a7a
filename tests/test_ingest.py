"""`mailbot ingest`, called as Postfix's pipe transport calls it: the message on stdin, the
envelope as arguments, the answer as an exit code the MTA acts on (0, 65, 67, 75)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from mailbot.bots.default import app
from mailbot.serve import running
from mailbot.store.models import InboundStatus
from mailbot.testing import build_mail, make_thread, settings_for, wait_for_status
from tests.test_cli import _env

MAILBOT = [sys.executable, "-m", "mailbot"]


async def _ingest(env: dict[str, str], raw: bytes, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *MAILBOT, "ingest", *args, env=env,
        stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate(raw)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_a_piped_reply_is_stored_and_then_worked_by_the_node(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    env = _env(tmp_path, MAILBOT_DATABASE_URL=settings.database_url)
    async with running(settings, app, http=False) as node:
        thread = await make_thread(node, people=("ann", "bo"))
        address = thread.addresses["ann"]
        raw = build_mail("ann@example.com", address, "Sent through Postfix.")
        code, said = await _ingest(
            env, raw, "--to", address.upper(), "--from", "ann@example.com",
            "--client-ip", "192.0.2.7", "--helo", "mx.example.com",
        )  # fmt: skip
        assert code == 0 and "queued as" in said, said
        row = await wait_for_status(node.sessions, int(said.rsplit(" ", 1)[1]))
    assert row.status is InboundStatus.delivered
    assert (row.client_ip, row.helo, row.mail_from) == (
        "192.0.2.7",
        "mx.example.com",
        "ann@example.com",
    )
    assert address.split("+")[1].split("@")[0] not in said  # the token is never echoed


async def test_each_refusal_is_the_exit_code_the_mta_expects(tmp_path: Path) -> None:
    env = _env(tmp_path)
    mail = build_mail("x@example.com", "reply+nosuch@localhost", "hi")
    code, said = await _ingest(env, mail, "--to", "reply+nosuch@localhost")
    assert code == 67 and "token unknown" in said, said  # EX_NOUSER: bounced
    code, said = await _ingest(env, mail, "--to", "someone@example.net")
    assert code == 67 and "foreign domain" in said, said
    huge = b"X-Big: " + b"a" * 300_000 + b"\r\n" + mail
    code, said = await _ingest(env, huge, "--to", "reply+nosuch@localhost")
    assert code == 65, said  # EX_DATAERR: refused as it is
    broken = _env(tmp_path, MAILBOT_SMTP_PORT="99999")
    code, said = await _ingest(broken, mail, "--to", "reply+nosuch@localhost")
    assert code == 75 and "try again later" in said, said  # a site's mistake bounces nothing
    down = _env(tmp_path, MAILBOT_DATABASE_URL="postgresql+asyncpg://bob:s3cretpw@127.0.0.1:1/db")
    code, said = await _ingest(down, mail, "--to", "reply+nosuch@localhost")
    assert code == 75 and "try again later" in said and "s3cretpw" not in said  # EX_TEMPFAIL
