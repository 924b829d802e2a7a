"""Bots tested with the in-process helpers alone: no SMTP socket, no running node.

Each mail goes through the real pipeline (spool, worker, analysis, SPF/DKIM/DMARC against
offline DNS, the bot, the outbox) against SQLite; what the outbox hands on is kept by a
recording transport.
"""

from __future__ import annotations

import asyncio
from email.utils import getaddresses
from pathlib import Path

import pytest
from sqlalchemy import select

from mailbot import Bot, InboundMail, Mailbot
from mailbot.bots.comments import CommentsBot
from mailbot.errors import DeliveryError
from mailbot.store import conversations, tokens
from mailbot.store.models import InboundStatus, OutboundMessage, OutboundStatus
from mailbot.testing import Harness, NotAccepted, RecordingTransport, SinkedMail, build_mail


class ShoutBot(Bot):
    """The README's example: answers every reply with the reply in capitals."""

    name = "shout"

    async def before_process(self, mail: InboundMail) -> None:
        if len(mail.reply) > 1000:
            self.bounce("too long to shout")

    async def process(self, mail: InboundMail) -> None:
        assert mail.participant is not None
        await self.ctx.comment(mail)
        await self.ctx.send(
            mail.participant,
            subject=f"Re: {mail.subject}",
            body=mail.reply.upper(),
            in_reply_to=mail,
        )


SHOUT = Mailbot(bots=[ShoutBot])
COMMENTS = Mailbot(bots=[CommentsBot])


async def _reply_to_owner(h: Harness[RecordingTransport], mail: SinkedMail) -> str:
    """Whose live reply address the mail's Reply-To is."""
    address = getaddresses([mail.message["Reply-To"]])[0][1]
    token = tokens.token_from_local_part(address.split("@")[0])
    assert token is not None, address
    async with h.sessions() as session:
        check = await tokens.check(session, token)
    assert check.live and check.participant is not None
    return check.participant.email


async def _outbound(h: Harness[RecordingTransport]) -> list[OutboundMessage]:
    async with h.sessions() as session:
        return list(await session.scalars(select(OutboundMessage).order_by(OutboundMessage.id)))


async def test_the_shout_bot_comments_and_answers_the_sender_in_capitals(tmp_path: Path) -> None:
    async with Harness(SHOUT, tmp_path) as h:
        thread = await h.thread("issue-7", ("alice", "bob"), bot="shout")
        row = await h.receive(build_mail("alice@example.com", thread.addresses["alice"], "hi bob"))

        assert (row.status, row.reason) == (InboundStatus.delivered, None)
        async with h.sessions() as session:
            convo = await conversations.get(session, "issue-7")
        assert convo is not None
        assert [(c.body, c.participant.email) for c in convo.comments if c.participant] == [
            ("hi bob", "alice@example.com")
        ]
        [mail] = h.transport.sent
        assert mail.rcpt_tos == ["alice@example.com"]
        assert mail.mail_from.startswith("bounces+")
        assert mail.text.strip() == "HI BOB"
        assert mail.message["Subject"] == "Re: Re: test"
        assert await _reply_to_owner(h, mail) == "alice@example.com"
        assert [m.status for m in await _outbound(h)] == [OutboundStatus.sent]


async def test_the_comments_bot_emails_every_other_participant_with_their_own_reply_to(
    tmp_path: Path,
) -> None:
    async with Harness(COMMENTS, tmp_path, transport=RecordingTransport()) as h:
        thread = await h.thread()
        raw = build_mail(
            "Alice <alice@example.com>",
            thread.addresses["alice"],
            "Works for me.\n\nOn Mon, bob <bob@example.com> wrote:\n> does it?\n",
        )
        row = await h.receive(raw)

        assert row.status is InboundStatus.delivered
        assert h.transport.to("alice@example.com") == []
        for person in ("bob", "carol"):
            [mail] = h.transport.to(f"{person}@example.com")
            assert "Works for me." in mail.text and "does it?" not in mail.text
            assert await _reply_to_owner(h, mail) == f"{person}@example.com"


async def test_a_bot_that_bounces_leaves_no_comment_and_sends_no_answer(tmp_path: Path) -> None:
    async with Harness(SHOUT, tmp_path) as h:
        thread = await h.thread("issue-7", ("alice", "bob"), bot="shout")
        row = await h.receive(
            build_mail("alice@example.com", thread.addresses["alice"], "a" * 2000)
        )

        assert (row.status, row.reason) == (InboundStatus.bounced, "too long to shout")
        async with h.sessions() as session:
            convo = await conversations.get(session, "issue-7")
        assert convo is not None and convo.comments == []
        assert not any("AAAA" in m.text for m in h.transport.sent)


async def test_a_relay_answering_451_defers_the_answer_until_it_takes_it(
    tmp_path: Path,
) -> None:
    transport = RecordingTransport(reply="451 4.3.0 try later")
    async with Harness(SHOUT, tmp_path, transport=transport, retry_base_seconds=0) as h:
        thread = await h.thread("issue-7", ("alice", "bob"), bot="shout")
        row = await h.receive(build_mail("alice@example.com", thread.addresses["alice"], "hi"))

        assert row.status is InboundStatus.delivered  # the comment stands; only sending waits
        assert transport.sent == [] and len(transport.refused) == 1
        [queued] = await _outbound(h)
        assert (queued.status, queued.reason) == (OutboundStatus.deferred, "451 4.3.0 try later")

        transport.reply = None
        assert await h.deliver() == 1
        assert [m.rcpt_tos for m in transport.sent] == [["alice@example.com"]]
        assert [m.status for m in await _outbound(h)] == [OutboundStatus.sent]


async def test_a_relay_answering_550_fails_the_answer_with_the_relays_words(
    tmp_path: Path,
) -> None:
    transport = RecordingTransport(reply="550 5.1.1 no such user")
    async with Harness(SHOUT, tmp_path, transport=transport) as h:
        thread = await h.thread("issue-7", ("alice", "bob"), bot="shout")
        await h.receive(build_mail("alice@example.com", thread.addresses["alice"], "hi"))

        [failed] = await _outbound(h)
        assert (failed.status, failed.reason) == (OutboundStatus.failed, "550 5.1.1 no such user")
        assert await h.deliver() == 0  # final: never tried again


async def test_a_mail_to_an_unknown_reply_address_is_stored_rejected_and_answered_by_nobody(
    tmp_path: Path,
) -> None:
    async with Harness(SHOUT, tmp_path) as h:
        row = await h.receive(build_mail("alice@example.com", "reply+bogus@localhost", "hi"))

        assert row.status is InboundStatus.rejected and row.reason
        assert not any("HI" in m.text for m in h.transport.sent)


async def test_a_header_section_over_the_limit_is_not_accepted(tmp_path: Path) -> None:
    async with Harness(SHOUT, tmp_path, max_header_bytes=4096) as h:
        raw = build_mail(
            "alice@example.com", "reply+x@localhost", "hi", headers={"X-Big": "a" * 8000}
        )
        with pytest.raises(NotAccepted):
            await h.receive(raw)


async def test_the_recording_transport_answers_like_a_relay() -> None:
    transport = RecordingTransport()
    await transport.send("bounces+1@localhost", "Bob@Example.com", b"Subject: x\r\n\r\nbody\r\n")
    assert [m.rcpt_tos for m in transport.to("bob@example.com")] == [["Bob@Example.com"]]

    transport.reply = "452 4.2.2 mailbox full"
    with pytest.raises(DeliveryError) as soft:
        await transport.send("bounces+2@localhost", "bob@example.com", b"x")
    transport.reply = "554 5.7.1 refused"
    with pytest.raises(DeliveryError) as hard:
        await transport.send("bounces+3@localhost", "bob@example.com", b"x")
    assert (soft.value.permanent, hard.value.permanent) == (False, True)
    assert len(transport.sent) == 1 and len(transport.refused) == 2


async def test_the_harness_leaves_no_task_running_between_mails_or_after(tmp_path: Path) -> None:
    me = asyncio.current_task()
    async with Harness(SHOUT, tmp_path) as h:
        thread = await h.thread("issue-7", ("alice", "bob"), bot="shout")
        await h.receive(build_mail("alice@example.com", thread.addresses["alice"], "hi"))
        assert asyncio.all_tasks() == {me}
    assert asyncio.all_tasks() == {me}
