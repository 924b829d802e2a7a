"""The SMTP server's policy, over real sockets on loopback."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import aiosmtplib
from sqlalchemy import select, text, update

from mailbot.bots.default import app
from mailbot.serve import Node, running
from mailbot.store import tokens
from mailbot.store.models import InboundMessage, InboundStatus, ReplyToken, utcnow
from mailbot.testing import (
    SmtpSink,
    build_mail,
    make_thread,
    settings_for,
    smtp_send,
    wait_for_status,
)


async def test_foreign_domain_is_refused_as_relaying(node: Node) -> None:
    result = await smtp_send(
        node.smtp_port, "alice@example.com", ["someone@gmail.example"], b"Subject: x\r\n\r\nhi\r\n"
    )
    code, message = result.rcpt_codes[0]
    assert (code, message.split()[0]) == (550, "5.7.1")
    assert "gmail.example" in message
    assert result.data_code is None


async def test_unknown_reply_token_is_refused_with_a_message_that_says_so(node: Node) -> None:
    address = tokens.reply_address(tokens.mint_token(), node.settings.domain)
    result = await smtp_send(node.smtp_port, "alice@example.com", [address], b"x")
    code, message = result.rcpt_codes[0]
    assert (code, message.split()[0]) == (550, "5.1.1")
    assert "unknown" in message


async def test_expired_and_revoked_tokens_are_refused_with_their_reason(node: Node) -> None:
    thread = await make_thread(node)
    alice_token = thread.addresses["alice"].split("+")[1].split("@")[0]
    async with node.sessions() as session, session.begin():
        await session.execute(
            update(ReplyToken)
            .where(ReplyToken.token_hash == tokens.hash_token(alice_token))
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
        await tokens.revoke(session, thread.addresses["bob"].split("+")[1].split("@")[0])
    result = await smtp_send(
        node.smtp_port, "x@example.com", [thread.addresses["alice"], thread.addresses["bob"]], b"x"
    )
    (code1, text1), (code2, text2) = result.rcpt_codes
    assert code1 == code2 == 550
    assert "expired" in text1 and "revoked" in text2


async def test_unrouted_local_part_is_refused(node: Node) -> None:
    result = await smtp_send(node.smtp_port, "a@example.com", ["postmaster2@localhost"], b"x")
    assert result.rcpt_codes[0][0] == 550


async def test_token_survives_an_upper_cased_address(node: Node, sink: SmtpSink) -> None:
    thread = await make_thread(node)
    shouted = thread.addresses["alice"].upper()
    raw = build_mail("Alice <ALICE@EXAMPLE.COM>", shouted, "Works for me.")
    result = await smtp_send(node.smtp_port, "ALICE@EXAMPLE.COM", [shouted], raw)
    assert result.rcpt_codes == [(250, "2.1.5 Recipient OK")]
    row = await wait_for_status(node.sessions, result.inbound_id)
    assert row.status == InboundStatus.delivered
    assert row.reply_text == "Works for me."


async def test_message_is_committed_with_its_envelope_before_250(node: Node) -> None:
    thread = await make_thread(node)
    raw = build_mail("alice@example.com", thread.addresses["alice"], "Stored first.")
    result = await smtp_send(node.smtp_port, "alice@example.com", [thread.addresses["alice"]], raw)
    assert result.data_code == 250
    async with node.sessions() as session:
        row = await session.scalar(
            select(InboundMessage).where(InboundMessage.id == result.inbound_id)
        )
        stored = await session.scalar(
            select(InboundMessage.raw).where(InboundMessage.id == result.inbound_id)
        )
    assert row is not None and stored is not None
    assert stored.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")
    assert row.mail_from == "alice@example.com"
    assert row.rcpt_tos == [thread.addresses["alice"]]
    assert row.client_ip == "127.0.0.1"
    assert row.helo


async def test_oversize_message_is_refused_with_552_and_size_is_advertised(
    tmp_path: Path, sink: SmtpSink
) -> None:
    settings = settings_for(tmp_path, sink, max_message_size=20_000)
    async with running(settings, app, work=False, http=False) as node:
        thread = await make_thread(node)
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=node.smtp_port, start_tls=False)
        async with client:
            await client.ehlo()
            assert client.esmtp_extensions["size"] == "20000"
            # Announced too large in MAIL FROM: refused before any data is sent.
            try:
                await client.mail("alice@example.com", options=["SIZE=50000"])
                raise AssertionError("MAIL with SIZE over the limit was accepted")
            except aiosmtplib.SMTPSenderRefused as exc:
                assert exc.code == 552
        big = build_mail("alice@example.com", thread.addresses["alice"], "x" * 60_000)
        result = await smtp_send(
            node.smtp_port, "alice@example.com", [thread.addresses["alice"]], big
        )
        assert result.data_code == 552
        async with node.sessions() as session:
            assert await session.scalar(select(InboundMessage.id)) is None


async def test_commit_failure_answers_451_and_the_next_try_is_accepted(node: Node) -> None:
    thread = await make_thread(node)
    raw = build_mail("alice@example.com", thread.addresses["alice"], "Try again later.")
    async with node.sessions() as session, session.begin():
        # A real failure inside the database at commit time (as a full disk would give).
        await session.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON inbound_messages "
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        )
    refused = await smtp_send(node.smtp_port, "alice@example.com", [thread.addresses["alice"]], raw)
    assert refused.data_code == 451
    assert refused.data_message.startswith("4.3.0")
    async with node.sessions() as session, session.begin():
        await session.execute(text("DROP TRIGGER refuse"))
    retried = await smtp_send(node.smtp_port, "alice@example.com", [thread.addresses["alice"]], raw)
    assert retried.data_code == 250
    row = await wait_for_status(node.sessions, retried.inbound_id)
    assert row.status == InboundStatus.delivered
