"""Issue #8, finding 7: a mail the relay took is never sent again because the database was
away when its `sent` was to be recorded, nor because its lease ran out while others were sent.

The database really fails (a SQLite trigger that refuses the update, PostgreSQL backends
terminated and connections refused); the relay is a real SMTP server on loopback. Leases and
retry delays are shortened so that "past the lease" takes a second, not five minutes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select, text

from mailbot.bots.default import app
from mailbot.outbound import delivery
from mailbot.outbound import outbox as outbound
from mailbot.outbound import record as outbox_record
from mailbot.serve import Node, running
from mailbot.store import tokens
from mailbot.store.db import database, upgrade
from mailbot.store.models import OutboundMessage, OutboundStatus
from mailbot.testing import SmtpSink, build_mail, make_thread, reply, settings_for

REFUSE_SENT = (
    "CREATE TRIGGER refuse_sent BEFORE UPDATE ON outbound_messages "
    "WHEN NEW.status = 'sent' BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
)


@pytest.fixture
def short_lease(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(delivery, "LEASE", timedelta(seconds=1))
    yield


async def _rows(node: Node) -> list[OutboundMessage]:
    async with node.sessions() as session:
        return list(await session.scalars(select(OutboundMessage).order_by(OutboundMessage.id)))


async def _until_sent(node: Node) -> OutboundMessage:
    async with asyncio.timeout(60):
        while True:
            rows = await _rows(node)
            if rows and rows[0].status == OutboundStatus.sent:
                return rows[0]
            await asyncio.sleep(0.05)


async def _until_unrecorded(node: Node) -> None:
    async with asyncio.timeout(60):
        while not outbox_record.unrecorded(node.sessions):
            await asyncio.sleep(0.05)


async def _a_comment_to_bob(node: Node) -> None:
    thread = await make_thread(node, people=("alice", "bob"))
    row = await reply(node, "alice@example.com", thread.addresses["alice"], "Sent once.")
    assert row.status.value == "delivered", row.reason


async def _sqlite(node: Node, statement: str) -> None:
    async with node.sessions() as session, session.begin():
        await session.execute(text(statement))


async def test_a_sent_mail_whose_status_update_fails_is_recorded_by_retrying_not_sent_again(
    tmp_path: Path, sink: SmtpSink, short_lease: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_record, "RECORD_DELAYS", (0.2,) * 50)
    async with running(settings_for(tmp_path, sink), app, http=False) as node:
        await _sqlite(node, REFUSE_SENT)
        await _a_comment_to_bob(node)
        await sink.wait_for(1)
        await asyncio.sleep(1.5)  # the 0.3 s lease runs out several times while it retries
        assert len(sink.received) == 1
        await _sqlite(node, "DROP TRIGGER refuse_sent")
        row = await _until_sent(node)
        await asyncio.sleep(1.0)  # more outbox passes, past the lease again
    assert len(sink.received) == 1
    assert (row.attempts, row.reason) == (1, None)
    assert not outbox_record.unrecorded(node.sessions)


async def test_when_the_database_stays_away_the_send_is_remembered_and_recorded_later(
    tmp_path: Path, sink: SmtpSink, short_lease: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_record, "RECORD_DELAYS", (0.05, 0.05))
    async with running(settings_for(tmp_path, sink), app, http=False) as node:
        await _sqlite(node, REFUSE_SENT)
        await _a_comment_to_bob(node)
        await _until_unrecorded(node)  # retries given up: only this process knows it is out
        await asyncio.sleep(1.5)  # many outbox passes, each past the lease
        [row] = await _rows(node)
        assert row.status == OutboundStatus.sending  # as leased: the database never heard more
        assert len(sink.received) == 1
        await _sqlite(node, "DROP TRIGGER refuse_sent")
        row = await _until_sent(node)
        await asyncio.sleep(1.0)
    assert len(sink.received) == 1
    assert row.attempts == 1 and row.sent_at is not None
    assert not outbox_record.unrecorded(node.sessions)


class _SlowSink(SmtpSink):
    """A relay that takes `hold` seconds to answer each DATA (after keeping the mail)."""

    hold = 2.5

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        await asyncio.sleep(self.hold)
        return answer


async def _queue_directly(node: Node, count: int) -> list[str]:
    """Outbound rows as the outbox stores them, without a bot: their Message-IDs."""
    ids = []
    async with node.sessions() as session, session.begin():
        for i in range(count):
            message_id = outbound.new_message_id("localhost")
            address = tokens.reply_address(tokens.mint_token(), "localhost")
            raw = build_mail("mailbot <notifications@localhost>", f"p{i}@example.com", "x")
            session.add(
                OutboundMessage(
                    status=OutboundStatus.queued,
                    message_id=message_id,
                    mail_from=f"bounces+{i:020d}@localhost",
                    recipient=f"p{i}@example.com",
                    reply_to=address,
                    subject="x",
                    raw=raw,
                )
            )
            ids.append(message_id)
    return ids


async def test_a_lease_that_ran_out_while_a_batch_was_sent_never_lets_two_nodes_send_one_mail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Node A leases three rows for 3 s; each send takes 2.5 s, so the third row's lease has
    # run out before A comes to it, and node B (another pass on the same database) takes it.
    monkeypatch.setattr(delivery, "LEASE", timedelta(seconds=3))
    async with _SlowSink() as relay:
        # One connection, so A sends its rows one after another.
        settings = settings_for(tmp_path, relay, delivery_connections_per_destination=1)
        async with running(settings, app, smtp=False, work=False, http=False) as node:
            await _queue_directly(node, 3)
            node_a = asyncio.create_task(delivery.deliver_due(node.sessions, settings))
            await relay.wait_for(2)  # A is sending its second row: 2.5 s into the batch
            await asyncio.sleep(1.5)  # the batch lease (3 s) has run out; A is still busy
            assert await delivery.deliver_due(node.sessions, settings) == 1  # B: the third
            assert await node_a == 3
            rows = await _rows(node)
    assert {row.status for row in rows} == {OutboundStatus.sent}
    assert sorted(m.rcpt_tos[0] for m in relay.received) == [f"p{i}@example.com" for i in range(3)]


class _BlipAfterAccepting(SmtpSink):
    """A relay that, once armed, takes PostgreSQL away from the node before its 250: the
    database refuses new connections and the node's backends are terminated."""

    def __init__(self, admin_url: str, database_name: str) -> None:
        super().__init__()
        self.admin_url = admin_url
        self.database_name = database_name
        self.armed = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self.armed.wait()
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'ALTER DATABASE "{self.database_name}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                self.database_name,
            )
        finally:
            await admin.close()
        return await super().handle_DATA(server, session, envelope)

    async def bring_back(self) -> None:
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'ALTER DATABASE "{self.database_name}" ALLOW_CONNECTIONS true')
        finally:
            await admin.close()


@pytest.mark.postgres
async def test_postgresql_backends_terminated_after_the_relays_250_do_not_send_a_mail_twice(
    tmp_path: Path, postgres_url: str, short_lease: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_record, "RECORD_DELAYS", (0.05, 0.05))
    async with database(postgres_url) as (engine, _):
        await upgrade(engine)
    base, name = postgres_url.replace("+asyncpg", "").rsplit("/", 1)
    relay = _BlipAfterAccepting(f"{base}/test", name)
    async with relay:
        settings = settings_for(tmp_path, relay, database_url=postgres_url)
        async with running(settings, app, http=False) as node:
            try:
                await _a_comment_to_bob(node)
                relay.armed.set()
                await relay.wait_for(1)
                await _until_unrecorded(node)
                await asyncio.sleep(1.5)  # passes past the lease, the database still away
                assert len(relay.received) == 1
            finally:
                await relay.bring_back()
            row = await _until_sent(node)
            await asyncio.sleep(1.0)
    assert len(relay.received) == 1
    assert row.attempts == 1
