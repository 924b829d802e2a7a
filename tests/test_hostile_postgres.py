"""Hostile bytes on PostgreSQL: no text value there may hold a NUL, and none is lost for it.

Finding 3 of the hardening issue: on PostgreSQL any NUL byte in a reply's text made the
message end ``failed`` (``invalid byte sequence for encoding UTF8: 0x00``) after it had
been accepted with 250.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from mailbot.bots.default import app
from mailbot.serve import running
from mailbot.store.db import database, upgrade
from mailbot.store.models import Comment, InboundMessage, InboundStatus
from mailbot.testing import SmtpSink, make_thread, settings_for, smtp_send, wait_for_status

pytestmark = pytest.mark.postgres


async def test_a_reply_full_of_nul_bytes_is_stored_and_posted_on_postgresql(
    tmp_path: Path, postgres_url: str, sink: SmtpSink
) -> None:
    async with database(postgres_url) as (engine, _):
        await upgrade(engine)
    settings = settings_for(tmp_path, sink, database_url=postgres_url)
    async with running(settings, app, http=False) as node:
        thread = await make_thread(node, people=("alice", "bob"))
        address = thread.addresses["alice"]
        raw = (
            f"From: Alice\x00 <alice@example.com>\r\nTo: {address}\r\n"
            "Subject: Re: nul\x00 inside\r\nMessage-ID: <nul.\x00.1@client.example>\r\n"
            "X-Odd: a\x00b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "Before the nul\x00 and after it.\r\n"
        ).encode()
        result = await smtp_send(node.smtp_port, "alice@example.com", [address], raw)
        assert result.data_code == 250, result
        row = await wait_for_status(node.sessions, result.inbound_id)
        assert row.status == InboundStatus.delivered, row.reason
        async with node.sessions() as session:
            stored = await session.get(InboundMessage, result.inbound_id)
            comment = await session.scalar(
                select(Comment).where(Comment.inbound_id == result.inbound_id)
            )
        assert stored is not None and comment is not None
        assert "\x00" not in (stored.reply_text or "")
        assert comment.body.startswith("Before the nul")
        assert "\x00" not in comment.body
