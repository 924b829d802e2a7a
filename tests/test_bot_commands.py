"""Commands in mail through the real pipeline (in-process harness, SQLite): who may use
what, all or nothing, the one answer to the sender, confirmation, and the comments bot's
/unsubscribe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select, update

from mailbot import Bot, CommandError, InboundMail, Mailbot, Participant, command
from mailbot.bots.comments import CommentsBot
from mailbot.store import conversations
from mailbot.store.models import Comment, InboundStatus, OutboundMessage
from mailbot.testing import Harness, RecordingTransport, SinkedMail, Thread, build_mail


class DeskBot(Bot):
    name = "desk"

    async def process(self, mail: InboundMail) -> None:
        await self.ctx.comment(mail)

    @command(help="close the ticket")
    async def close(self, mail: InboundMail) -> str:
        self.ctx.state["open"] = False
        return "closed"

    @command(help="set the priority, 1 to 4")
    async def priority(self, mail: InboundMail, level: int) -> str:
        if not 1 <= level <= 4:
            raise CommandError("the priority goes from 1 to 4")
        self.ctx.state["priority"] = level
        return f"priority {level}"

    @command(help="add labels", who="verified")
    async def label(self, mail: InboundMail, labels: list[str]) -> str:
        self.ctx.state.setdefault("labels", []).extend(labels)
        return "labelled " + ", ".join(labels)

    @command(help="hand the ticket over", who="maintainer")
    async def assign(self, mail: InboundMail, to: Participant) -> str:
        self.ctx.state["assignee"] = to.email
        return f"assigned to {to.email}"

    @command(help="delete the ticket", confirm=True)
    async def delete(self, mail: InboundMail) -> str:
        self.ctx.state["deleted"] = True
        return "deleted"

    @command(help="writes, then refuses")
    async def half(self, mail: InboundMail) -> None:
        await self.ctx.comment(mail, "half a comment")
        self.ctx.state["half"] = True
        raise CommandError("changed my mind")

    @command(help="mutes its sender, then refuses")
    async def mutefail(self, mail: InboundMail) -> None:
        assert mail.participant is not None
        self.ctx.mute(mail.participant)
        raise CommandError("not today")

    @command(help="fails")
    async def crash(self, mail: InboundMail) -> None:
        self.ctx.state["crashed"] = True
        raise RuntimeError("a bug in the bot")


class ControlBot(Bot):
    """debbugs-style command address: plain lines, no conversation needed."""

    name = "control"
    sender_policy = "open"
    command_style = "lines"

    async def process(self, mail: InboundMail) -> None:
        self.bounce("no commands found; send 'help'")

    @command(help="what a ticket's state is", who="anyone")
    async def status(self, mail: InboundMail, number: int) -> str:
        return f"ticket {number} is open"

    @command(help="close a ticket", who="anyone")
    async def close(self, mail: InboundMail, number: int) -> str:
        return f"ticket {number} closed"


DESK = Mailbot(bots=[DeskBot, ControlBot], routes=[("control", ControlBot)])


async def _state(h: Harness[RecordingTransport], key: str = "issue-1") -> dict[str, object]:
    async with h.sessions() as session:
        convo = await conversations.get(session, key)
    assert convo is not None
    return dict(convo.state or {})


async def _comments(h: Harness[RecordingTransport]) -> list[str]:
    async with h.sessions() as session:
        return list(await session.scalars(select(Comment.body).order_by(Comment.id)))


def _transcript(h: Harness[RecordingTransport], who: str) -> SinkedMail:
    [mail] = [m for m in h.transport.to(who) if "What became of the commands" in m.text]
    return mail


async def _desk(h: Harness[RecordingTransport]) -> Thread:
    return await h.thread(bot="desk")


async def test_commands_run_are_lifted_out_of_the_comment_and_answered_once(
    tmp_path: Path,
) -> None:
    async with Harness(DESK, tmp_path) as h:
        thread = await _desk(h)
        body = "Fixed in main.\n\n/close\n/priority 2\n\nIt ships on Monday."
        row = await h.receive(build_mail("alice@example.com", thread.addresses["alice"], body))

        assert row.status is InboundStatus.delivered
        assert await _comments(h) == ["Fixed in main.\n\nIt ships on Monday."]
        assert await _state(h) == {"open": False, "priority": 2}
        answer = _transcript(h, "alice@example.com")
        assert "    /close\n  done: closed" in answer.text
        assert "    /priority 2\n  done: priority 2" in answer.text
        assert answer.message["Auto-Submitted"] == "auto-replied"
        assert answer.message["In-Reply-To"] == row.message_id
        assert len(h.transport.sent) == 1  # nobody else is told of a transcript
        assert [c["status"] for c in (row.outcome or {})["commands"]] == ["done", "done"]


async def test_a_reply_of_commands_only_makes_no_comment(tmp_path: Path) -> None:
    async with Harness(DESK, tmp_path) as h:
        thread = await _desk(h)
        row = await h.receive(build_mail("bob@example.com", thread.addresses["bob"], "/close\n"))
        assert row.status is InboundStatus.delivered
        assert await _comments(h) == []
        assert await _state(h) == {"open": False}
        _transcript(h, "bob@example.com")


async def test_a_command_in_the_quoted_history_never_runs(tmp_path: Path) -> None:
    async with Harness(DESK, tmp_path) as h:
        thread = await _desk(h)
        body = "Agreed, leave it open.\n\nOn Mon, Bob <bob@example.com> wrote:\n> /close\n> done?\n"
        row = await h.receive(build_mail("alice@example.com", thread.addresses["alice"], body))
        assert row.status is InboundStatus.delivered
        assert await _state(h) == {}
        assert await _comments(h) == ["Agreed, leave it open."]
        assert h.transport.sent == []  # no commands, no transcript


async def test_unknown_forbidden_and_malformed_commands_are_refused_with_the_list(
    tmp_path: Path,
) -> None:
    async with Harness(DESK, tmp_path) as h:
        thread = await _desk(h)
        body = "/frobnicate now\n/label bug\n/assign @bob\n/priority high\n/priority 9\n/assign"
        await h.receive(build_mail("alice@example.com", thread.addresses["alice"], body))

        assert await _state(h) == {}
        text = _transcript(h, "alice@example.com").text
        assert "    /frobnicate now\n  unknown command\n" in text
        assert "  refused: only senders whose mail passed DMARC" in text  # /label
        assert "  refused: only participants with the role 'maintainer' may use /assign" in text
        assert "/priority high\n  refused: LEVEL must be a number, not 'high'; usage:" in text
        assert "/priority 9\n  refused: the priority goes from 1 to 4" in text
        usable = text.split("Commands you may use here:")[1]
        assert "/close" in usable and "/priority LEVEL" in usable and "/help" in usable
        assert "/label" not in usable and "/assign" not in usable
        # The unknown line was not taken for a command: it stays in the comment.
        assert await _comments(h) == ["/frobnicate now"]


async def test_a_role_or_a_login_lets_a_participant_use_what_others_may_not(
    tmp_path: Path,
) -> None:
    async with Harness(DESK, tmp_path) as h:
        thread = await _desk(h)
        async with h.sessions() as session, session.begin():
            await session.execute(
                update(Participant)
                .where(Participant.id == thread.participants["alice"].id)
                .values(roles=["maintainer"])
            )
        body = "/assign @carol\n/label ui, slow"
        await h.receive(
            build_mail("alice@example.com", thread.addresses["alice"], body),
            auth_user="alice",  # logged in over SMTP: a verified sender
        )
        assert await _state(h) == {"assignee": "carol@example.com", "labels": ["ui", "slow"]}
        text = _transcript(h, "alice@example.com").text
        assert "done: assigned to carol@example.com" in text and "done: labelled ui, slow" in text


async def test_a_refused_command_leaves_nothing_and_a_failing_one_fails_the_mail(
    tmp_path: Path,
) -> None:
    async with Harness(DESK, tmp_path, max_attempts=1) as h:
        thread = await _desk(h)
        await h.receive(build_mail("alice@example.com", thread.addresses["alice"], "/half\n/close"))
        assert await _comments(h) == []
        assert await _state(h) == {"open": False}  # /close after it still ran
        assert "/half\n  refused: changed my mind" in _transcript(h, "alice@example.com").text

        body = "A comment.\n/priority 3\n/crash"
        row = await h.receive(build_mail("bob@example.com", thread.addresses["bob"], body))
        assert row.status is not InboundStatus.delivered and "a bug in the bot" in (
            row.reason or ""
        )
        # All or nothing: neither the comment, nor /priority, nor any answer was kept.
        assert await _comments(h) == []
        assert await _state(h) == {"open": False}
        assert h.transport.to("bob@example.com") == []


async def test_a_destructive_command_waits_for_its_confirmation(tmp_path: Path) -> None:
    async with Harness(DESK, tmp_path) as h:
        thread = await _desk(h)
        await h.receive(build_mail("alice@example.com", thread.addresses["alice"], "/delete"))
        assert "deleted" not in await _state(h)
        asked = _transcript(h, "alice@example.com").text
        found = re.search(r"reply with /confirm ([0-9a-f]{6}) within a day", asked)
        assert found is not None, asked
        code = found.group(1)

        # Someone else cannot confirm it, and a wrong code confirms nothing.
        await h.receive(build_mail("bob@example.com", thread.addresses["bob"], f"/confirm {code}"))
        assert "no command of yours waits for that code" in _transcript(h, "bob@example.com").text
        assert "deleted" not in await _state(h)

        h.transport.sent.clear()
        await h.receive(
            build_mail("alice@example.com", thread.addresses["alice"], f"/confirm {code}")
        )
        assert (await _state(h)).get("deleted") is True
        assert (
            f"/confirm {code}: /delete\n  done: deleted" in _transcript(h, "alice@example.com").text
        )

        h.transport.sent.clear()  # a code is used once
        await h.receive(
            build_mail("alice@example.com", thread.addresses["alice"], f"/confirm {code}")
        )
        assert "no command of yours waits" in _transcript(h, "alice@example.com").text


async def test_replying_to_a_transcript_quoting_it_runs_nothing_again(tmp_path: Path) -> None:
    async with Harness(DESK, tmp_path) as h:
        thread = await _desk(h)
        await h.receive(build_mail("alice@example.com", thread.addresses["alice"], "/priority 2"))
        answer = _transcript(h, "alice@example.com")
        # A client that quotes without ">" (the transcript's lines as they are), top-posted.
        body = f"ok, and one more thing\n\n{answer.text}"
        await h.receive(build_mail("alice@example.com", thread.addresses["alice"], body))
        assert await _state(h) == {"priority": 2}


async def test_a_command_mail_to_a_command_address_reads_lines_until_thanks(
    tmp_path: Path,
) -> None:
    async with Harness(DESK, tmp_path) as h:
        body = "status 42\nclose 42\nthanks\nclose 43\n"
        row = await h.receive(
            build_mail("jo@example.net", "control@localhost", body), auth_user="jo"
        )
        assert row.status is InboundStatus.delivered
        results = (row.outcome or {})["commands"]
        assert [(r["line"], r["detail"]) for r in results] == [
            ("status 42", "ticket 42 is open"),
            ("close 42", "ticket 42 closed"),
        ]
        [answer] = h.transport.to("jo@example.net")
        assert "    close 42\n  done: ticket 42 closed" in answer.text
        assert answer.message["Reply-To"] is None  # a stranger gets no reply address


async def test_a_command_mail_from_an_unproved_address_gets_no_answer(tmp_path: Path) -> None:
    async with Harness(DESK, tmp_path) as h:
        row = await h.receive(build_mail("jo@example.net", "control@localhost", "status 1"))
        assert row.status is InboundStatus.delivered
        assert (row.outcome or {})["transcript"].startswith("not sent")
        assert h.transport.sent == []  # no backscatter to a From that may be forged


COMMENTS = Mailbot(bots=[CommentsBot])


async def test_unsubscribe_stops_a_participants_notifications_until_subscribe(
    tmp_path: Path,
) -> None:
    async with Harness(COMMENTS, tmp_path) as h:
        thread = await h.thread()
        await h.receive(build_mail("bob@example.com", thread.addresses["bob"], "/unsubscribe"))
        assert "no more mail from this conversation" in _transcript(h, "bob@example.com").text
        assert await _comments(h) == []

        h.transport.sent.clear()
        await h.receive(build_mail("alice@example.com", thread.addresses["alice"], "Ping"))
        assert sorted(m.rcpt_tos[0] for m in h.transport.sent) == ["carol@example.com"]

        await h.receive(build_mail("bob@example.com", thread.addresses["bob"], "/subscribe\nBack."))
        assert await _comments(h) == ["Ping", "Back."]
        h.transport.sent.clear()
        await h.receive(build_mail("carol@example.com", thread.addresses["carol"], "Hi all"))
        assert sorted(m.rcpt_tos[0] for m in h.transport.sent) == [
            "alice@example.com",
            "bob@example.com",
        ]


@pytest.mark.parametrize(
    ("body", "kinds"),
    [("/help", {"transcript"}), ("help me\n/help", {"transcript", "notification"})],
)
async def test_help_lists_what_this_sender_may_use(
    tmp_path: Path, body: str, kinds: set[str]
) -> None:
    async with Harness(COMMENTS, tmp_path) as h:
        thread = await h.thread()
        await h.receive(build_mail("bob@example.com", thread.addresses["bob"], body))
        text = _transcript(h, "bob@example.com").text
        assert "/subscribe" in text and "/unsubscribe" in text
        async with h.sessions() as session:
            sent = await session.scalars(select(OutboundMessage.kind))
            assert set(sent) == kinds  # "help me" is a comment the others are sent


async def test_a_conversation_answering_itself_is_paused_and_says_why(tmp_path: Path) -> None:
    async with Harness(DESK, tmp_path, loop_max_replies=3, loop_window_seconds=600) as h:
        thread = await _desk(h)
        other = await h.thread("issue-2", ("alice",), bot="desk")
        rows = [
            await h.receive(build_mail("bob@example.com", thread.addresses["bob"], f"ping {n}"))
            for n in range(4)
        ]
        assert [r.status for r in rows] == [InboundStatus.delivered] * 3 + [InboundStatus.rejected]
        assert (rows[-1].outcome or {})["code"] == "paused"
        assert (rows[-1].reason or "").startswith(
            "conversation paused: 3 replies in the last 10 min"
        )
        assert await _comments(h) == ["ping 0", "ping 1", "ping 2"]
        assert h.transport.to("bob@example.com") == []  # nobody is told: no more turns
        # Another conversation is not held up.
        row = await h.receive(build_mail("alice@example.com", other.addresses["alice"], "hi"))
        assert row.status is InboundStatus.delivered


async def test_after_a_refused_command_the_rest_of_the_mail_goes_on_as_if_it_never_ran(
    tmp_path: Path,
) -> None:
    async with Harness(DESK, tmp_path) as h:
        thread = await _desk(h)
        body = "Closing.\n/mutefail\n/close"
        row = await h.receive(build_mail("alice@example.com", thread.addresses["alice"], body))
        assert row.status is InboundStatus.delivered, row.reason
        assert await _state(h) == {"open": False} and await _comments(h) == ["Closing."]
        async with h.sessions() as session:
            alice = await session.get(Participant, thread.participants["alice"].id)
        assert alice is not None and alice.muted_at is None


async def test_prose_that_looks_like_an_unknown_command_gets_no_answer(tmp_path: Path) -> None:
    async with Harness(DESK, tmp_path) as h:
        thread = await _desk(h)
        body = "The disk filled up:\n/var is full again"
        row = await h.receive(build_mail("alice@example.com", thread.addresses["alice"], body))
        assert row.status is InboundStatus.delivered
        assert (row.outcome or {})["transcript"] == "not sent: no known command"
        assert h.transport.sent == [] and await _comments(h) == [body]
