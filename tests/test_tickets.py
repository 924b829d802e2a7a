"""The shipped help desk (mailbot/bots/tickets.py), through the real pipeline in-process: support@
opens numbered tickets, replies and commands change them, everyone else is told once; and
once end to end, over real SMTP with a real relay sink."""

from __future__ import annotations

from datetime import timedelta
from email.utils import getaddresses
from pathlib import Path

from sqlalchemy import select

from mailbot.bots.tickets import app
from mailbot.serve import running
from mailbot.store import conversations, tokens
from mailbot.store.models import Conversation, InboundStatus, Participant
from mailbot.testing import (
    Harness,
    RecordingTransport,
    SinkedMail,
    SmtpSink,
    build_mail,
    reply,
    settings_for,
)

SUPPORT = "support@localhost"


async def _ticket(h: Harness[RecordingTransport], number: int) -> Conversation:
    async with h.sessions() as session:
        found = await conversations.get(session, f"ticket-{number}")
    assert found is not None
    return found


def _reply_address(mail: SinkedMail) -> str:
    return getaddresses([mail.message["Reply-To"]])[0][1]


async def _open(h: Harness[RecordingTransport], sender: str, subject: str, body: str) -> str:
    """Open a ticket as a logged-in (so proved) sender; their reply address from the answer."""
    h.transport.sent.clear()
    raw = build_mail(sender, SUPPORT, body, subject=subject)
    row = await h.receive(raw, auth_user=sender.split("@")[0])
    assert row.status is InboundStatus.delivered, row.reason
    [answer] = h.transport.to(sender)
    return _reply_address(answer)


async def _add_agent(h: Harness[RecordingTransport], number: int, email: str) -> str:
    """An agent joins the ticket (as the app would, through the API); their reply address."""
    async with h.sessions() as session, session.begin():
        ticket = await conversations.get(session, f"ticket-{number}")
        assert ticket is not None
        agent = await conversations.ensure_participant(session, ticket, email, "Dee", ["agent"])
        token = await tokens.issue(session, agent, timedelta(days=30))
    return tokens.reply_address(token, "localhost")


async def test_mail_to_support_opens_a_numbered_ticket_and_answers_with_its_address(
    tmp_path: Path,
) -> None:
    async with Harness(app, tmp_path) as h:
        address = await _open(h, "ann@example.com", "Printer on fire", "It smokes.")
        ticket = await _ticket(h, 1)
        assert ticket.bot == "tickets" and ticket.subject == "Printer on fire"
        assert ticket.state == {"number": 1, "status": "open", "labels": []}
        assert [p.email for p in ticket.participants] == ["ann@example.com"]
        [answer] = h.transport.to("ann@example.com")
        assert answer.message["Subject"] == "[#1] Printer on fire"
        assert "We opened ticket #1" in answer.text
        assert address.startswith("reply+")

        await _open(h, "bo@example.com", "Another", "Me too")
        assert (await _ticket(h, 2)).state == {"number": 2, "status": "open", "labels": []}


async def test_an_unproved_sender_gets_a_ticket_but_no_answer(tmp_path: Path) -> None:
    async with Harness(app, tmp_path) as h:
        row = await h.receive(build_mail("ann@example.com", SUPPORT, "Help", subject="Hi"))
        assert row.status is InboundStatus.delivered
        assert (row.outcome or {})["acknowledgement"].startswith("not sent")
        assert h.transport.sent == []  # a From nobody proved is never written to
        assert (await _ticket(h, 1)).participants[0].email == "ann@example.com"


async def test_agents_change_a_ticket_by_command_and_the_others_are_told_once(
    tmp_path: Path,
) -> None:
    async with Harness(app, tmp_path) as h:
        ann = await _open(h, "ann@example.com", "Printer on fire", "It smokes.")
        dee = await _add_agent(h, 1, "dee@example.com")

        h.transport.sent.clear()
        body = "On my way.\n/assign @dee\n/label hardware, Urgent\n/priority 1"
        row = await h.receive(build_mail("dee@example.com", dee, body))
        assert row.status is InboundStatus.delivered, row.reason
        state = (await _ticket(h, 1)).state or {}
        assert (state["assignee"], state["labels"], state["priority"]) == (
            "dee@example.com",
            ["hardware", "urgent"],
            1,
        )
        [told] = h.transport.to("ann@example.com")
        assert told.message["Subject"] == "Re: [#1] Printer on fire"
        text = told.text.replace("\r\n", "\n")
        assert "Dee wrote:\n\nOn my way.\n" in text
        assert "Dee assigned the ticket to Dee." in text
        assert "Dee labelled it hardware, urgent." in text and "Dee set the priority to 1." in text
        assert len(h.transport.to("dee@example.com")) == 1  # only the transcript

        # The customer may close, not triage.
        h.transport.sent.clear()
        await h.receive(build_mail("ann@example.com", ann, "/priority 4\n/close"))
        state = (await _ticket(h, 1)).state or {}
        assert (state["priority"], state["status"]) == (1, "closed")
        [transcript] = h.transport.to("ann@example.com")
        assert "refused: only participants with the role 'agent' may use /priority" in (
            transcript.text.replace("\r\n", "\n")
        )
        [told] = h.transport.to("dee@example.com")
        assert "ann closed the ticket." in told.text and "wrote:" not in told.text


async def test_a_reply_to_a_closed_ticket_reopens_it(tmp_path: Path) -> None:
    async with Harness(app, tmp_path) as h:
        ann = await _open(h, "ann@example.com", "Slow", "Slow again.")
        await h.receive(build_mail("ann@example.com", ann, "/close"))
        assert ((await _ticket(h, 1)).state or {})["status"] == "closed"
        await h.receive(build_mail("ann@example.com", ann, "It is back."))
        assert ((await _ticket(h, 1)).state or {})["status"] == "open"
        bodies = [c.body for c in (await _ticket(h, 1)).comments]
        assert bodies == ["Slow again.", "It is back."]


async def test_a_stranger_quoting_a_ticket_number_opens_a_ticket_of_their_own(
    tmp_path: Path,
) -> None:
    async with Harness(app, tmp_path) as h:
        await _open(h, "ann@example.com", "Printer on fire", "It smokes.")
        [answer] = h.transport.to("ann@example.com")
        raw = build_mail(
            "eve@example.net",
            SUPPORT,
            "Add me to this one please",
            subject="Re: [#1] Printer on fire",
            headers={"In-Reply-To": answer.message["Message-ID"]},
        )
        row = await h.receive(raw, auth_user="eve")
        # Answering a mail the ticket sent to someone else is not a way in.
        assert row.status is InboundStatus.rejected and "not the participant" in (row.reason or "")
        row = await h.receive(
            build_mail("eve@example.net", SUPPORT, "Same problem, #1", subject="[#1] me too"),
            auth_user="eve",
        )
        assert row.status is InboundStatus.delivered
        assert [p.email for p in (await _ticket(h, 1)).participants] == ["ann@example.com"]
        assert [p.email for p in (await _ticket(h, 2)).participants] == ["eve@example.net"]
        async with h.sessions() as session:
            eve = await session.scalar(
                select(Participant).where(Participant.email == "eve@example.net")
            )
        assert eve is not None and row.conversation_id == eve.conversation_id


async def test_an_unproved_sender_gets_no_transcript_either(tmp_path: Path) -> None:
    async with Harness(app, tmp_path) as h:
        raw = build_mail("ann@example.com", SUPPORT, "Help\n/help\n/close", subject="Hi")
        row = await h.receive(raw)
        assert row.status is InboundStatus.delivered
        assert (row.outcome or {})["transcript"].startswith("not sent")
        assert h.transport.sent == []  # a new ticket's From is not proved: no backscatter


async def test_closing_with_a_last_word_closes_and_a_later_reply_reopens(tmp_path: Path) -> None:
    async with Harness(app, tmp_path) as h:
        ann = await _open(h, "ann@example.com", "Slow", "Slow again.")
        await h.receive(build_mail("ann@example.com", ann, "Fixed by a restart.\n/close"))
        assert ((await _ticket(h, 1)).state or {})["status"] == "closed"
        await h.receive(build_mail("ann@example.com", ann, "Back again."))
        assert ((await _ticket(h, 1)).state or {})["status"] == "open"


async def test_the_help_desk_over_real_smtp_with_a_real_relay(
    tmp_path: Path, sink: SmtpSink
) -> None:
    # SPF passes for loopback: the sender is proved, so the help desk answers them.
    spf = {"example.com": ["TXT v=spf1 ip4:127.0.0.1 -all"]}
    async with running(settings_for(tmp_path, sink, dns_zone=spf), app, http=False) as node:
        raw = build_mail("ann@example.com", SUPPORT, "It smokes.", subject="Printer on fire")
        opened = await reply(node, "ann@example.com", SUPPORT, raw)
        assert opened.status is InboundStatus.delivered, opened.reason
        [answer] = await sink.wait_for(1)
        assert answer.rcpt_tos == ["ann@example.com"]
        assert answer.message["Subject"] == "[#1] Printer on fire"
        address = _reply_address(answer)
        closed = await reply(node, "ann@example.com", address, "/close\nIt was the toner.")
        assert closed.status is InboundStatus.delivered, closed.reason
        async with node.sessions() as session:
            ticket = await conversations.get(session, "ticket-1")
        assert ticket is not None and ticket.state is not None
        assert ticket.state["status"] == "closed"
        assert [c.body for c in ticket.comments] == ["It smokes.", "It was the toner."]
        [_, transcript] = await sink.wait_for(2)
        assert "/close" in transcript.text and transcript.rcpt_tos == ["ann@example.com"]
