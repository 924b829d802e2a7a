"""Outbound delivery against SMTP servers on loopback that misbehave on purpose.

Each test runs a real node; a reply from alice makes a notification to bob, which the outbox
hands to a :class:`ScriptedSink` told to refuse, hang up, hang or take it.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from sqlalchemy import select

from mailbot.bots.default import app
from mailbot.outbound import delivery
from mailbot.serve import Node, running
from mailbot.store.db import database, upgrade
from mailbot.store.models import OutboundMessage, OutboundStatus, Participant
from mailbot.testing import make_thread, reply, settings_for
from tests.sinks import ScriptedSink
from tests.test_cli import _env, _mailbot
from tests.test_exactly_once import _queue_directly
from tests.test_several_nodes import Store
from tests.test_web_api import _request


async def _outbox(node: Node) -> list[OutboundMessage]:
    async with node.sessions() as session:
        return list(await session.scalars(select(OutboundMessage).order_by(OutboundMessage.id)))


async def _until(
    node: Node, check: Callable[[list[OutboundMessage]], bool], timeout: float = 30.0
) -> list[OutboundMessage]:
    async with asyncio.timeout(timeout):
        while not check(rows := await _outbox(node)):
            await asyncio.sleep(0.05)
    return rows


def _final(rows: list[OutboundMessage]) -> bool:
    return bool(rows) and all(
        r.status in (OutboundStatus.sent, OutboundStatus.failed) for r in rows
    )


async def _alice_writes(node: Node, text: str = "Hi") -> None:
    """Alice replies in issue-1 (made on her first reply): bob gets a notification."""
    address = _addresses.get(node.settings.database_url)
    if address is None:
        thread = await make_thread(node, people=("alice", "bob"))
        address = _addresses[node.settings.database_url] = thread.addresses["alice"]
    row = await reply(node, "alice@example.com", address, text)
    assert row.status.value == "delivered", row.reason


_addresses: dict[str, str] = {}  # per test database: alice's reply address in issue-1


async def test_451_twice_then_250_delivers_the_mail_once(tmp_path: Path) -> None:
    async with ScriptedSink(script=["451 4.3.0 busy", "451 4.3.0 busy"]) as sink:
        async with running(settings_for(tmp_path, sink.url), app, http=False) as node:
            await _alice_writes(node)
            [row] = await _until(node, _final)
    assert row.status == OutboundStatus.sent and row.attempts == 3
    assert sink.answered == ["451 4.3.0 busy", "451 4.3.0 busy", "250"]
    [mail] = sink.received
    assert mail.rcpt_tos == ["bob@example.com"]
    assert mail.data.count(b"Message-ID:") == 1 and row.message_id.encode() in mail.data


async def test_550_fails_the_mail_suspends_the_participant_and_suppresses_the_next(
    tmp_path: Path,
) -> None:
    async with ScriptedSink(script=["550 5.1.1 no such user"]) as sink:
        async with running(settings_for(tmp_path, sink.url), app, http=False) as node:
            await _alice_writes(node, "first")
            [row] = await _until(node, _final)
            assert (row.status, row.reason, row.attempts) == (
                OutboundStatus.failed,
                "550 5.1.1 no such user",
                1,
            )
            async with node.sessions() as session:
                bob = await session.scalar(
                    select(Participant).where(Participant.email == "bob@example.com")
                )
            assert bob is not None and bob.bounced_at is not None
            assert bob.bounce_reason == "550 5.1.1 no such user"

            await _alice_writes(node, "second")
            rows = await _until(node, lambda rows: len(rows) == 2)
            await asyncio.sleep(0.5)  # several outbox passes: nothing more goes out
            rows = await _outbox(node)
    assert rows[1].status == OutboundStatus.suppressed
    assert "suspended after a hard bounce (550 5.1.1 no such user)" in (rows[1].reason or "")
    assert sink.received == [] and sink.answered == ["550 5.1.1 no such user"]


async def test_mail_queued_before_a_hard_bounce_is_suppressed_not_sent(tmp_path: Path) -> None:
    # Two mails to bob wait (no relay yet); the first meets a 550: the second never goes.
    settings = settings_for(tmp_path)
    async with running(settings, app, http=False) as node:
        await _alice_writes(node, "first")
        await _alice_writes(node, "second")
        assert [r.status for r in await _outbox(node)] == [OutboundStatus.held] * 2
        async with ScriptedSink(script=["550 5.1.1 gone"]) as sink:
            relay = settings.model_copy(update={"relay": sink.url})
            assert await delivery.deliver_due(node.sessions, relay) == 2
        rows = await _outbox(node)
    assert [r.status for r in rows] == [OutboundStatus.failed, OutboundStatus.suppressed]
    assert sink.answered == ["550 5.1.1 gone"]


async def test_a_connection_closed_mid_data_defers_and_the_mail_goes_once_later(
    tmp_path: Path,
) -> None:
    async with ScriptedSink(script=["hangup"]) as sink:
        async with running(settings_for(tmp_path, sink.url), app, http=False) as node:
            await _alice_writes(node)
            [row] = await _until(node, _final)
    assert row.status == OutboundStatus.sent and row.attempts == 2
    assert sink.answered == ["hangup", "250"] and len(sink.received) == 1


async def test_a_server_that_hangs_times_out_and_the_mail_is_retried(tmp_path: Path) -> None:
    async with ScriptedSink(script=["hang"]) as sink:
        settings = settings_for(tmp_path, sink.url, relay_timeout=0.5)
        async with running(settings, app, http=False) as node:
            await _alice_writes(node)
            deferred = await _until(
                node, lambda rows: bool(rows) and rows[0].status == OutboundStatus.deferred
            )
            assert "lost the connection" in (deferred[0].reason or "") or "hung" in (
                deferred[0].reason or ""
            )
            [row] = await _until(node, _final)
    assert row.status == OutboundStatus.sent and row.attempts == 2
    assert sink.answered == ["hang", "250"] and len(sink.received) == 1


async def test_a_mail_refused_for_longer_than_its_lifetime_fails(tmp_path: Path) -> None:
    async with ScriptedSink(script=["451 4.3.0 busy"] * 100) as sink:
        # A lifetime of about a second: the third or fourth try gives up.
        settings = settings_for(tmp_path, sink.url, delivery_lifetime_hours=1 / 3600)
        async with running(settings, app, http=False) as node:
            await _alice_writes(node)
            [row] = await _until(node, _final)
    assert row.status == OutboundStatus.failed and row.attempts >= 2
    assert row.reason == "gave up after 0.000277778 hours of trying: 451 4.3.0 busy"
    assert sink.received == []


async def test_ten_mails_to_one_destination_share_one_connection(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)  # no relay: the ten wait, then go in one pass
    async with running(settings, app, http=False) as node:
        thread = await make_thread(node, people=("alice", *(f"p{i}" for i in range(10))))
        row = await reply(node, "alice@example.com", thread.addresses["alice"], "to all ten")
        assert row.status.value == "delivered"
        assert len(await _outbox(node)) == 10
        async with ScriptedSink() as sink:
            relay = settings.model_copy(
                update={"relay": sink.url, "delivery_connections_per_destination": 1}
            )
            assert await delivery.deliver_due(node.sessions, relay) == 10
        rows = await _outbox(node)
    assert {r.status for r in rows} == {OutboundStatus.sent}
    assert len(sink.received) == 10 and sink.connections == 1
    assert {m.connection for m in sink.received} == {1}
    assert sorted(m.rcpt_tos[0] for m in sink.received) == sorted(r.recipient for r in rows)


async def test_a_bounced_mail_retried_by_the_operator_goes_out_with_a_reply_address_that_works(
    tmp_path: Path,
) -> None:
    async with ScriptedSink(script=["550 5.1.1 no such user"]) as sink:
        async with running(settings_for(tmp_path, sink.url), app) as node:
            await _alice_writes(node)
            [failed] = await _until(node, _final)
            assert failed.status == OutboundStatus.failed and failed.reply_to
            port = node.http_port

            code, _, retried = await _request(port, "POST", f"/api/outbox/{failed.id}/retry")
            assert code == 200, retried
            assert (retried["status"], retried["reason"]) == ("queued", "retried by an operator")
            assert retried["reply_token"]["fingerprint"] not in failed.reply_to  # a fresh one
            [sent] = await _until(node, _final)
            assert sent.status == OutboundStatus.sent and sent.attempts == 1
            [mail] = sink.received
            reply_to = _header(mail.data, "Reply-To")
            assert reply_to.startswith("reply+") and "…" not in reply_to

            # Bob answers through it: accepted and posted (he is no longer suspended).
            answer = await reply(node, "bob@example.com", reply_to, "Mailbox fixed, thanks")
            assert answer.status.value == "delivered", answer.reason

            for action in ("retry", "cancel"):
                code, _, refused = await _request(port, "POST", f"/api/outbox/{sent.id}/{action}")
                assert code == 409 and "sent" in refused["error"]
            # Bob's comment notified alice: both sent, newest first; nothing else listed.
            alice = (await _until(node, lambda rows: len(rows) == 2 and _final(rows)))[1]
            code, _, listed = await _request(port, "GET", "/api/outbox?status=sent")
            assert code == 200 and [r["id"] for r in listed] == [alice.id, sent.id]
            code, _, listed = await _request(port, "GET", "/api/outbox?status=failed")
            assert code == 200 and listed == []
            code, _, _ = await _request(port, "GET", "/api/outbox?status=bogus")
            assert code == 400


async def test_the_outbox_commands_list_cancel_and_retry(tmp_path: Path) -> None:
    async with ScriptedSink(script=["451 4.3.0 busy"] * 1000) as sink:
        settings = settings_for(tmp_path, sink.url, retry_base_seconds=60)
        async with running(settings, app, http=False) as node:
            await _alice_writes(node)
            [row] = await _until(node, lambda rows: bool(rows) and rows[0].attempts == 1)
            env = _env(tmp_path, MAILBOT_DATABASE_URL=settings.database_url, MAILBOT_RELAY=sink.url)

            listed = await _mailbot(env, "outbox", "list", "--status", "deferred", "--json")
            [deferred] = [json.loads(line) for line in listed.splitlines()]
            assert (deferred["id"], deferred["reason"]) == (row.id, "451 4.3.0 busy")
            assert deferred["next_attempt_at"] and deferred["expires_at"]
            assert await _mailbot(env, "outbox", "list", "--status", "sent") == ""

            out = await _mailbot(env, "outbox", "cancel", str(row.id))
            assert "failed" in out and "cancelled by an operator" in out
            await _mailbot(env, "outbox", "cancel", str(row.id), ok=False)
            await _mailbot(env, "outbox", "retry", "999", ok=False)

            sink.script.clear()  # the server takes mail again
            out = await _mailbot(env, "outbox", "retry", str(row.id), "--json")
            assert json.loads(out)["status"] == "queued"
            node.wake_outbox.set()
            [row] = await _until(node, lambda rows: rows[0].status == OutboundStatus.sent)
    assert len(sink.received) == 1


def _header(data: bytes, name: str) -> str:
    return str(BytesHeaderParser().parsebytes(data)[name])


@pytest.mark.postgres
async def test_three_senders_on_one_postgresql_send_every_mail_exactly_once(
    tmp_path: Path, postgres_url: str
) -> None:
    # Three outboxes, each with its own engine (as three nodes have), pass after pass over
    # the same 300 queued mails, to one sink: every mail arrives once, none twice.
    count = 300
    async with ScriptedSink() as sink:
        settings = settings_for(tmp_path, sink.url, database_url=postgres_url)
        async with database(postgres_url) as (engine, sessions):
            await upgrade(engine)
            await _queue_directly(Store(settings, sessions), count)  # type: ignore[arg-type]

        async def node() -> int:
            async with database(postgres_url) as (_, own):
                transport = delivery.transport_for(settings)
                assert transport is not None
                tried = 0
                try:
                    while done := await delivery.deliver_due(own, settings, 25, transport):
                        tried += done
                finally:
                    await delivery.close(transport)
                return tried

        tried = await asyncio.gather(node(), node(), node())
        async with database(postgres_url) as (_, sessions), sessions() as session:
            statuses = list(await session.scalars(select(OutboundMessage.status)))
    arrived = Counter(m.rcpt_tos[0] for m in sink.received)
    assert sorted(arrived) == sorted(f"p{i}@example.com" for i in range(count))
    assert set(arrived.values()) == {1}
    assert sum(tried) == count  # together they tried each mail once
    assert statuses == [OutboundStatus.sent] * count
