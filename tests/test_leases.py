"""Claims on inbound rows are short leases, renewed while the work runs (PostgreSQL, shared).

Finding 7 of the hardening issue: after PostgreSQL backends were terminated under load, six
inbound messages sat in ``processing`` for the 10-minute lease. A lease is now short (a
minute by default) and renewed while a message is in flight, so a dead node's rows come back
soon while a slow message is never taken by a second node and acted on twice.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import func, select, update

from mailbot import InboundMail, Mailbot
from mailbot.bots.comments import CommentsBot
from mailbot.pipeline import stages
from mailbot.serve import running
from mailbot.store.db import database, upgrade
from mailbot.store.models import Comment, InboundMessage, InboundStatus, utcnow
from mailbot.testing import (
    SmtpSink,
    build_mail,
    make_thread,
    settings_for,
    smtp_send,
    wait_for_status,
)
from mailbot.trust import authenticate
from mailbot.trust.authenticate import Authentication

pytestmark = pytest.mark.postgres


class SlowComments(CommentsBot):
    """Counts how often it was called."""

    name = "slow-comments"
    calls: ClassVar[list[int]] = []

    async def process(self, mail: InboundMail) -> None:
        SlowComments.calls.append(mail.id)
        await super().process(mail)


def slow_dns(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """SPF and DKIM lookups that take four leases (outside any transaction, as they run);
    the list records each start."""
    original = authenticate.check_sender
    started: list[float] = []

    def slowly(raw: bytes, **options: Any) -> Authentication:
        started.append(time.monotonic())
        time.sleep(2.0)
        return original(raw, **options)

    monkeypatch.setattr(stages, "check_sender", slowly)
    return started


APP = Mailbot(bots=[CommentsBot, SlowComments])


async def test_a_slow_message_keeps_its_lease_and_is_acted_on_once_by_two_nodes(
    tmp_path: Path, postgres_url: str, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = slow_dns(monkeypatch)
    async with database(postgres_url) as (engine, _):
        await upgrade(engine)
    settings = settings_for(tmp_path, sink, database_url=postgres_url, lease_seconds=0.5)
    SlowComments.calls.clear()
    async with (
        running(settings, APP, work=False, http=False) as smtp_node,
        running(settings, APP, smtp=False, http=False) as worker_a,
        running(settings, APP, smtp=False, http=False) as worker_b,
    ):
        thread = await make_thread(smtp_node, people=("alice", "bob"), bot="slow-comments")
        address = thread.addresses["alice"]
        raw = build_mail("alice@example.com", address, "Slow but sure.")
        result = await smtp_send(smtp_node.smtp_port, "alice@example.com", [address], raw)
        worker_a.wake_worker.set()
        worker_b.wake_worker.set()
        row = await wait_for_status(smtp_node.sessions, result.inbound_id)
        await asyncio.sleep(1.0)  # a second claim, if the lease had lapsed, would be running
        async with smtp_node.sessions() as session:
            count = await session.scalar(select(func.count()).select_from(Comment))
    assert row.status == InboundStatus.delivered, row.reason
    assert SlowComments.calls == [result.inbound_id]
    assert count == 1
    assert len(lookups) == 1  # the other node never took the message while it was in flight


async def test_a_row_left_processing_by_a_dead_node_is_taken_back_after_its_lease(
    tmp_path: Path, postgres_url: str, sink: SmtpSink
) -> None:
    async with database(postgres_url) as (engine, _):
        await upgrade(engine)
    settings = settings_for(tmp_path, sink, database_url=postgres_url, lease_seconds=1.0)
    async with running(settings, APP, work=False, http=False) as smtp_node:
        thread = await make_thread(smtp_node, people=("alice", "bob"))
        address = thread.addresses["alice"]
        raw = build_mail("alice@example.com", address, "Picked up again.")
        result = await smtp_send(smtp_node.smtp_port, "alice@example.com", [address], raw)
        async with smtp_node.sessions() as session, session.begin():
            # What a node that died mid-message leaves behind.
            await session.execute(
                update(InboundMessage)
                .where(InboundMessage.id == result.inbound_id)
                .values(status=InboundStatus.processing, updated_at=utcnow())
            )
        async with running(settings, APP, smtp=False, http=False):
            still = await wait_for_status(
                smtp_node.sessions,
                result.inbound_id,
                frozenset({InboundStatus.processing}),
            )
            assert still.status == InboundStatus.processing  # the lease holds at first
            row = await wait_for_status(smtp_node.sessions, result.inbound_id, timeout=20)
            assert row.status == InboundStatus.delivered, row.reason
            assert utcnow() - still.updated_at >= timedelta(seconds=1.0)
