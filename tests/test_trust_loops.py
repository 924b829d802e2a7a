"""Auto-replies, bounces, duplicates and mail loops: over real SMTP, what is stored and what
is (not) sent."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from sqlalchemy import select

from mailbot import Bot, InboundMail, Mailbot
from mailbot.bots.comments import CommentsBot
from mailbot.serve import Node, running
from mailbot.store.conversations import get, to_json
from mailbot.store.db import database, upgrade
from mailbot.store.models import InboundMessage, InboundStatus, OutboundStatus
from mailbot.testing import SmtpSink, build_mail, settings_for, smtp_send, wait_for_status
from mailbot.web import views
from tests.trust_support import (
    comments,
    make_thread,
    outbound_rows,
    outcome,
    participant,
    zone,
)

APP = Mailbot(bots=[CommentsBot])


@pytest.fixture
async def node(tmp_path: Path, sink: SmtpSink) -> AsyncIterator[Node]:
    async with running(settings_for(tmp_path, sink, dns_zone=zone()), APP, http=False) as n:
        yield n


async def send(node: Node, mail_from: str, to: str, raw: bytes) -> InboundMessage:
    result = await smtp_send(node.smtp_port, mail_from, [to], raw)
    assert result.data_code == 250, result
    return await wait_for_status(node.sessions, result.inbound_id)


# --- auto-replies ---------------------------------------------------------------------------


async def test_out_of_office_answer_is_never_acted_on_or_answered(node: Node) -> None:
    thread = await make_thread(node)
    to = thread.addresses["alice"]
    raw = build_mail(
        "alice@example.com", to, "I am away until Monday.", subject="Out of Office: Issue issue-1"
    )
    row = await send(node, "alice@example.com", to, raw)
    assert row.status == InboundStatus.rejected
    assert outcome(row)["code"] == "auto_reply"
    assert row.reason == (
        "automatic mail, never acted on or answered: "
        "out-of-office subject: Out of Office: Issue issue-1"
    )
    assert outcome(row)["notice"]["why"] == "never to automatic mail (auto_reply)"
    assert await comments(node) == []
    assert await outbound_rows(node) == []


async def test_auto_submitted_no_is_a_person(node: Node) -> None:
    thread = await make_thread(node)
    to = thread.addresses["alice"]
    raw = build_mail("alice@example.com", to, "Written by me.", headers={"Auto-Submitted": "no"})
    row = await send(node, "alice@example.com", to, raw)
    assert row.status == InboundStatus.delivered, row.reason
    assert [c.body for c in await comments(node)] == ["Written by me."]


STORM_HEADERS: list[tuple[dict[str, str], str]] = [
    ({"Auto-Submitted": "auto-replied"}, "Re: Issue"),
    ({"Auto-Submitted": "auto-generated"}, "Re: Issue"),
    ({"X-Autoreply": "yes"}, "Re: Issue"),
    ({"X-Autorespond": "yes"}, "Re: Issue"),
    ({"Precedence": "bulk"}, "Re: Issue"),
    ({"Precedence": "junk"}, "Re: Issue"),
    ({"Precedence": "list"}, "Re: Issue"),
    ({"List-Id": "<dev.lists.example.com>"}, "Re: Issue"),
    ({}, "Automatic reply: Issue"),
    ({}, "Abwesenheitsnotiz: Issue"),
    ({}, "Réponse automatique : Issue"),
    ({}, "Respuesta automática: Issue"),
    ({}, "自動返信: Issue"),
]


async def test_a_100_message_auto_reply_storm_gets_no_answer(node: Node) -> None:
    thread = await make_thread(node)
    to = thread.addresses["alice"]
    ids = []
    for i in range(100):
        headers, subject = STORM_HEADERS[i % len(STORM_HEADERS)]
        raw = build_mail("alice@example.com", to, f"auto {i}", subject=subject, headers=headers)
        result = await smtp_send(node.smtp_port, "alice@example.com", [to], raw)
        assert result.data_code == 250
        ids.append(result.inbound_id)
    rows = [await wait_for_status(node.sessions, i) for i in ids]
    assert {r.status for r in rows} == {InboundStatus.rejected}
    assert {outcome(r)["code"] for r in rows} == {"auto_reply", "list"}
    assert await comments(node) == []
    assert await outbound_rows(node) == []


async def test_mail_from_our_own_domain_is_a_loop(node: Node) -> None:
    thread = await make_thread(node)
    to = thread.addresses["alice"]
    own = node.settings.from_address
    row = await send(node, own, to, build_mail(own, to, "echo"))
    assert row.status == InboundStatus.rejected
    assert outcome(row)["code"] == "loop"
    assert await outbound_rows(node) == []


# --- the per-address send limit ---------------------------------------------------------------


async def test_a_loop_that_gets_through_is_stopped_by_the_per_address_limit(
    tmp_path: Path, sink: SmtpSink
) -> None:
    settings = settings_for(tmp_path, sink, dns_zone=zone(), max_sends_per_address_per_hour=3)
    async with running(settings, APP, http=False) as node:
        thread = await make_thread(node)
        to = thread.addresses["alice"]
        for i in range(5):  # five real replies: each would notify bob
            row = await send(
                node, "alice@example.com", to, build_mail("alice@example.com", to, f"reply {i}")
            )
            assert row.status == InboundStatus.delivered
        rows = [r for r in await outbound_rows(node) if r.recipient == "bob@example.com"]
        assert [r.status for r in rows][3:] == [OutboundStatus.suppressed] * 2
        assert "3 mails to bob@example.com in the last hour" in (rows[4].reason or "")
        await sink.wait_for(3)
        await asyncio.sleep(0.5)  # give a fourth mail the chance to (wrongly) arrive
        assert len(sink.to("bob@example.com")) == 3


# --- bounces ----------------------------------------------------------------------------------


def dsn(verp: str, recipient: str, action: str, status: str, original_id: str) -> bytes:
    report = EmailMessage()
    report["From"] = "Mail Delivery System <MAILER-DAEMON@mx.example.com>"
    report["To"] = verp
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Message-ID"] = make_msgid(domain="mx.example.com")
    report.set_content(f"Could not deliver to {recipient}.")
    report.make_mixed()
    report.replace_header(
        "Content-Type", 'multipart/report; report-type=delivery-status; boundary="b0undary"'
    )
    body = (
        "--b0undary\r\nContent-Type: text/plain\r\n\r\nCould not deliver.\r\n"
        "--b0undary\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {status[0]}50 {status} mailbox unavailable\r\n"
        "--b0undary\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {original_id}\r\nSubject: Re: Issue issue-1\r\n"
        "--b0undary--\r\n"
    )
    head = "".join(f"{k}: {v}\r\n" for k, v in report.items())
    return (head + "MIME-Version: 1.0\r\n\r\n" + body).encode()


async def notify_bob(node: Node, sink: SmtpSink) -> tuple[str, str, int]:
    """Alice comments, so bob gets a notification: its VERP return path and Message-ID."""
    thread = await make_thread(node)
    to = thread.addresses["alice"]
    await send(node, "alice@example.com", to, build_mail("alice@example.com", to, "Hello Bob"))
    [mail] = await sink.wait_for(1)
    assert mail.mail_from.startswith("bounces+")
    return mail.mail_from, str(mail.message["Message-ID"]), thread.ids["bob"]


async def test_dsn_for_a_notification_we_sent_suspends_the_participant(
    node: Node, sink: SmtpSink
) -> None:
    verp, original, bob = await notify_bob(node, sink)
    row = await send(node, "", verp, dsn(verp, "bob@example.com", "failed", "5.1.1", original))
    assert row.status == InboundStatus.rejected
    assert outcome(row)["code"] == "bounce"
    assert row.reason == (
        "delivery status notification (RFC 3464): "
        "hard bounce for bob@example.com: sending to them is suspended"
    )
    assert outcome(row)["bounce"]["type"] == "hard"
    suspended = await participant(node, bob)
    assert suspended.bounced_at is not None and "5.1.1" in (suspended.bounce_reason or "")
    # Visible in the JSON of the inbox (CLI --json, API) and of the conversation.
    async with node.sessions() as session:
        [listed] = [m for m in await views.inbox(session) if m["id"] == row.id]
        convo = await get(session, "issue-1")
        assert convo is not None
        people = {p["email"]: p for p in to_json(convo)["participants"]}
    assert listed["outcome"]["bounce"]["recipient"] == "bob@example.com"
    assert people["bob@example.com"]["suspended"] is True
    # Alice writes again: the mail to bob is stored suppressed, and never sent.
    rows_before = len(sink.received)
    alice_address = await _alice_address(node)
    await send(
        node,
        "alice@example.com",
        alice_address,
        build_mail("alice@example.com", alice_address, "Still there?"),
    )
    last = (await outbound_rows(node))[-1]
    assert (last.recipient, last.status) == ("bob@example.com", OutboundStatus.suppressed)
    assert "suspended after a hard bounce" in (last.reason or "")
    await asyncio.sleep(0.3)
    assert len(sink.received) == rows_before


async def _alice_address(node: Node) -> str:
    from datetime import timedelta

    from mailbot.store import tokens
    from mailbot.store.models import Participant

    async with node.sessions() as session, session.begin():
        alice = await session.scalar(
            select(Participant).where(Participant.email == "alice@example.com")
        )
        assert alice is not None
        token = await tokens.issue(session, alice, timedelta(days=1))
    return tokens.reply_address(token, node.settings.domain)


async def test_soft_bounce_is_counted_and_does_not_suspend(node: Node, sink: SmtpSink) -> None:
    verp, original, bob = await notify_bob(node, sink)
    row = await send(node, "", verp, dsn(verp, "bob@example.com", "delayed", "4.2.2", original))
    assert row.status == InboundStatus.rejected
    assert outcome(row)["bounce"]["type"] == "soft"
    counted = await participant(node, bob)
    assert (counted.bounced_at, counted.soft_bounces) == (None, 1)


async def test_x_failed_recipients_is_a_hard_bounce(node: Node, sink: SmtpSink) -> None:
    verp, _original, bob = await notify_bob(node, sink)
    raw = build_mail(
        "MAILER-DAEMON@mx.example.com",
        verp,
        "failed",
        subject="Mail delivery failed",
        headers={"X-Failed-Recipients": "bob@example.com"},
    )
    row = await send(node, "", verp, raw)
    assert outcome(row)["bounce"]["type"] == "hard"
    assert (await participant(node, bob)).bounced_at is not None


async def test_a_return_path_we_never_used_is_refused_at_rcpt(node: Node) -> None:
    fake = f"bounces+{'0' * 20}@{node.settings.domain}"
    result = await smtp_send(node.smtp_port, "", [fake], b"Subject: x\r\n\r\nx\r\n")
    assert result.rcpt_codes[0][0] == 550
    assert result.data_code is None


# --- duplicates -----------------------------------------------------------------------------


async def test_the_same_message_twice_acts_once(node: Node) -> None:
    thread = await make_thread(node)
    to = thread.addresses["alice"]
    raw = build_mail("alice@example.com", to, "Only once, please")
    first = await send(node, "alice@example.com", to, raw)
    second = await send(node, "alice@example.com", to, raw)
    assert first.status == InboundStatus.delivered
    assert second.status == InboundStatus.rejected
    assert outcome(second)["code"] == "duplicate"
    assert second.reason == f"duplicate of message {first.id} (same Message-ID)"
    assert [c.body for c in await comments(node)] == ["Only once, please"]
    assert len([r for r in await outbound_rows(node) if r.recipient == "bob@example.com"]) == 1


async def test_two_copies_processed_at_the_same_moment_act_once(
    tmp_path: Path, sink: SmtpSink
) -> None:
    settings = settings_for(tmp_path, sink, dns_zone=zone(), worker_concurrency=4)
    # One node only receives, so both copies wait; then a worker takes them in one batch.
    # (SQLite runs one write transaction at a time, so here the newer copy meets the older
    # one delivered; the true race is the PostgreSQL test below.)
    async with running(settings, APP, work=False, http=False) as receiver:
        thread = await make_thread(receiver)
        to = thread.addresses["alice"]
        raw = build_mail("alice@example.com", to, "Sent twice at once")
        results = await asyncio.gather(
            *(smtp_send(receiver.smtp_port, "alice@example.com", [to], raw) for _ in range(2))
        )
        ids = [r.inbound_id for r in results]
        async with running(settings, APP, smtp=False, http=False) as worker:
            rows = [await wait_for_status(worker.sessions, i) for i in ids]
            assert sorted(r.status for r in rows) == [
                InboundStatus.delivered,
                InboundStatus.rejected,
            ]
            assert [outcome(r)["code"] for r in rows if r.status == InboundStatus.rejected] == [
                "duplicate"
            ]
            assert [c.body for c in await comments(worker)] == ["Sent twice at once"]


class SlowComments(CommentsBot):
    """Takes its time, so two copies are surely inside their transactions together."""

    name = "slow-comments"

    async def process(self, mail: InboundMail) -> None:
        await asyncio.sleep(0.3)
        await super().process(mail)


@pytest.mark.postgres
async def test_two_copies_racing_on_postgresql_act_once(
    tmp_path: Path, sink: SmtpSink, postgres_url: str
) -> None:
    """On PostgreSQL two workers really run both copies at once (on SQLite one write
    transaction waits for the other, so the newer copy always sees the older delivered)."""
    async with database(postgres_url) as (engine, _):
        await upgrade(engine)
    app = Mailbot(bots=[CommentsBot, SlowComments])
    settings = settings_for(tmp_path, sink, dns_zone=zone(), database_url=postgres_url)
    async with running(settings, app, work=False, http=False) as receiver:
        thread = await make_thread(receiver, bot="slow-comments")
        to = thread.addresses["alice"]
        raw = build_mail("alice@example.com", to, "Sent twice at once")
        results = await asyncio.gather(
            *(smtp_send(receiver.smtp_port, "alice@example.com", [to], raw) for _ in range(2))
        )
        async with (
            running(settings, app, smtp=False, http=False) as worker_a,
            running(settings, app, smtp=False, http=False),
        ):
            rows = [await wait_for_status(worker_a.sessions, r.inbound_id) for r in results]
            assert sorted(r.status for r in rows) == [
                InboundStatus.delivered,
                InboundStatus.rejected,
            ]
            assert [c.body for c in await comments(worker_a)] == ["Sent twice at once"]


# --- two mailbots ---------------------------------------------------------------------------


class RefuseAll(Bot):
    """A bot that refuses everything it gets, so every mail to it earns a notice."""

    name = "refuse-all"

    async def process(self, mail: InboundMail) -> None:
        self.bounce("this mailbox accepts no mail")


async def test_two_mailbots_do_not_answer_each_others_rejection_notices(
    tmp_path: Path,
) -> None:
    """A's notice goes to B's notifications@, whose bot refuses everything too: without the
    loop protections each would answer the other's notice, forever."""
    zone_both = {
        **zone(),
        "a.test": ["TXT v=spf1 ip4:127.0.0.1 -all"],
        "b.test": ["TXT v=spf1 ip4:127.0.0.1 -all"],
    }
    app = Mailbot(routes=[("notifications", RefuseAll)])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a_port = free_port()
    # Each node's outbox delivers straight into the other: a real loop, if one can start.
    settings_b = settings_for(
        tmp_path / "b", f"smtp://127.0.0.1:{a_port}", domain="b.test", dns_zone=zone_both
    )
    async with running(settings_b, app, http=False) as b:
        settings_a = settings_for(
            tmp_path / "a",
            f"smtp://127.0.0.1:{b.smtp_port}",
            domain="a.test",
            dns_zone=zone_both,
            smtp_port=a_port,
        )
        async with running(settings_a, app, http=False) as a:
            raw = build_mail(
                "notifications@b.test", "notifications@a.test", "Ping", subject="Hello"
            )
            first = await send(a, "notifications@b.test", "notifications@a.test", raw)
            assert first.status == InboundStatus.bounced
            assert first.reason == "this mailbox accepts no mail"
            assert outcome(first)["notice"]["sent"] is True
            # A's notice reaches B over SMTP and is refused there as automatic mail.
            at_b = await wait_for_status(b.sessions, 1)
            assert (at_b.parsed or {})["subject"] == "[Rejected] Hello"
            assert outcome(at_b)["code"] == "auto_reply"
            assert outcome(at_b)["notice"] == {
                "sent": False,
                "why": "never to automatic mail (auto_reply)",
            }
            assert await outbound_rows(b) == []  # B answered nothing
            async with asyncio.timeout(30):  # B took it; A records that within moments
                while (rows := await outbound_rows(a))[0].status != OutboundStatus.sent:
                    await asyncio.sleep(0.02)
            [notice] = rows
            assert (notice.kind, notice.status) == ("notice", OutboundStatus.sent)
            async with a.sessions() as session:
                assert len(list(await session.scalars(select(InboundMessage)))) == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
