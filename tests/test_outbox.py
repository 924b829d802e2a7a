"""Outbound delivery: a dead or refusing relay never loses a notification."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select

from mailbot.bots.default import app
from mailbot.serve import Node, running
from mailbot.store.models import OutboundMessage, OutboundStatus
from mailbot.testing import (
    SmtpSink,
    make_thread,
    reply,
    settings_for,
)


async def _outbox(node: Node) -> list[OutboundMessage]:
    async with node.sessions() as session:
        return list(await session.scalars(select(OutboundMessage).order_by(OutboundMessage.id)))


async def _until(node: Node, check, timeout: float = 30.0) -> list[OutboundMessage]:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not check(rows := await _outbox(node)):
            await asyncio.sleep(0.05)
    return rows


async def _comment(node: Node) -> None:
    thread = await make_thread(node, people=("alice", "bob"))
    await reply(node, "alice@example.com", thread.addresses["alice"], "Hi")


async def test_a_dead_relay_defers_mail_and_it_goes_out_when_back(tmp_path: Path) -> None:
    relay = SmtpSink()
    await relay.start()
    port = relay.port
    await relay.stop()  # the relay is down from the start
    async with running(settings_for(tmp_path, f"smtp://127.0.0.1:{port}"), app, http=False) as node:
        await _comment(node)
        [row] = await _until(node, lambda rows: rows and rows[0].attempts >= 1)
        assert row.status == OutboundStatus.deferred and row.next_attempt_at
        assert row.reason and "no server took the mail" in row.reason
        assert "unreachable" in row.reason
        async with SmtpSink(port=port) as back:
            [row] = await _until(node, lambda rows: rows[0].status == OutboundStatus.sent)
            [mail] = await back.wait_for(1)
        assert mail.rcpt_tos == ["bob@example.com"]
        assert row.attempts >= 2 and row.reason is None


async def test_a_permanent_refusal_is_recorded_as_failed(tmp_path: Path, sink: SmtpSink) -> None:
    sink.data_reply = "550 5.1.1 mailbox unavailable"
    async with running(settings_for(tmp_path, sink), app, http=False) as node:
        await _comment(node)
        [row] = await _until(node, lambda rows: rows and rows[0].status == OutboundStatus.failed)
        assert row.reason == "550 5.1.1 mailbox unavailable"
        assert row.attempts == 1


async def test_a_temporary_refusal_is_retried(tmp_path: Path, sink: SmtpSink) -> None:
    sink.data_reply = "451 4.3.0 try later"
    async with running(settings_for(tmp_path, sink), app, http=False) as node:
        await _comment(node)
        [row] = await _until(node, lambda rows: rows and rows[0].attempts >= 1)
        assert row.status == OutboundStatus.deferred and row.reason == "451 4.3.0 try later"
        sink.data_reply = None
        [row] = await _until(node, lambda rows: rows[0].status == OutboundStatus.sent)
        assert len(sink.received) == 1
