"""The worker: a bot that fails never stops the others; failures are retried, then recorded."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailbot import Bot, InboundMail, Mailbot
from mailbot.bots.comments import CommentsBot
from mailbot.pipeline import stages
from mailbot.pipeline.turns import Turns
from mailbot.serve import running
from mailbot.store.models import InboundStatus
from mailbot.testing import (
    SmtpSink,
    build_mail,
    make_thread,
    settings_for,
    smtp_send,
    wait_for_status,
)


class FragileBot(Bot):
    name = "fragile"

    async def process(self, mail: InboundMail) -> None:
        await self.ctx.comment(mail)
        if "boom" in mail.reply:
            raise RuntimeError("the ticket system is down")


async def test_a_failing_message_is_retried_then_failed_and_others_still_flow(
    tmp_path: Path, sink: SmtpSink
) -> None:
    app = Mailbot(bots=[FragileBot, CommentsBot])
    settings = settings_for(tmp_path, sink, max_attempts=3, retry_base_seconds=0.05)
    async with running(settings, app, http=False) as node:
        thread = await make_thread(node, people=("alice",), bot="fragile")
        address = thread.addresses["alice"]
        boom = await smtp_send(
            node.smtp_port,
            "alice@example.com",
            [address],
            build_mail("alice@example.com", address, "boom"),
        )
        fine = await smtp_send(
            node.smtp_port,
            "alice@example.com",
            [address],
            build_mail("alice@example.com", address, "fine"),
        )
        ok = await wait_for_status(node.sessions, fine.inbound_id)
        failed = await wait_for_status(node.sessions, boom.inbound_id)
    assert ok.status == InboundStatus.delivered
    assert failed.status == InboundStatus.failed
    assert failed.attempts == 3
    assert failed.reason and "the ticket system is down" in failed.reason
    # The failed tries left no comment behind: the bot's writes rolled back with them.
    assert ok.outcome and len(ok.outcome["comments"]) == 1


async def test_an_html_only_reply_becomes_a_plain_comment(tmp_path: Path, sink: SmtpSink) -> None:
    async with running(
        settings_for(tmp_path, sink), Mailbot(bots=[CommentsBot]), http=False
    ) as node:
        thread = await make_thread(node, people=("alice", "bob"))
        address = thread.addresses["alice"]
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "alice@example.com", address, "Re: x"
        msg.set_content(
            "<div dir='ltr'>Fixed in <b>v2.4</b>, thanks!</div><br>"
            "<div class='gmail_quote'><div class='gmail_attr'>On Mon, Bob &lt;bob@example.com&gt;"
            " wrote:<br></div><blockquote class='gmail_quote'>Is it fixed?</blockquote></div>",
            subtype="html",
        )
        result = await smtp_send(node.smtp_port, "alice@example.com", [address], msg.as_bytes())
        row = await wait_for_status(node.sessions, result.inbound_id)
        assert row.status == InboundStatus.delivered
        assert row.reply_text == "Fixed in v2.4, thanks!"
        assert row.quote and "Is it fixed?" in row.quote
        [mail] = await sink.wait_for(1)
        assert "Fixed in v2.4, thanks!" in mail.text and "<b>" not in mail.text


class ListeningBot(Bot):
    name = "listening"
    heard: list[str] = []

    async def process(self, mail: InboundMail) -> None:
        ListeningBot.heard.append(mail.reply)


async def test_mail_from_one_sender_to_one_address_reaches_the_bot_in_arrival_order(
    tmp_path: Path, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first mail is slow to read (a long one); the second, read at once, still waits
    # for it: "First!" then "/reset" must never reach a bot as "/reset" then "First!".
    read = stages.read
    second_read = asyncio.Event()

    async def slow_first(*args: object, **kwargs: object) -> stages.Read:
        result = await read(*args, **kwargs)  # type: ignore[arg-type]
        if "first" in (result.analysis.reply or ""):
            await second_read.wait()
            await asyncio.sleep(0.5)  # room for the second to overtake, were it allowed to
        else:
            second_read.set()
        return result

    monkeypatch.setattr(stages, "read", slow_first)
    ListeningBot.heard = []
    async with running(
        settings_for(tmp_path, sink), Mailbot(bots=[ListeningBot]), http=False
    ) as node:
        thread = await make_thread(node, people=("alice",), bot="listening")
        address = thread.addresses["alice"]
        sent = [
            await smtp_send(
                node.smtp_port, "alice@example.com", [address.upper()],
                build_mail("alice@example.com", address, text),
            )
            for text in ("first", "second")
        ]  # fmt: skip
        for each in sent:
            assert (await wait_for_status(node.sessions, each.inbound_id)).status == (
                InboundStatus.delivered
            )
    assert ListeningBot.heard == ["first", "second"]


async def test_a_turn_waits_only_for_earlier_mail_of_the_same_sender_and_address() -> None:
    turns = Turns()
    first = turns.take("Ann@example.com", ["reply+AbC@example.com"])
    other = turns.take("bo@example.com", ["reply+abc@example.com"])
    second = turns.take("ann@example.com", ["REPLY+abc@example.com", "x@example.com"])
    third = turns.take("ann@example.com", ["x@example.com"])
    await asyncio.wait_for(other.wait(), 1)  # another sender: never held up
    waiting = asyncio.create_task(second.wait())
    behind = asyncio.create_task(third.wait())
    await asyncio.sleep(0)
    assert not waiting.done() and not behind.done()
    first.done()
    await asyncio.wait_for(waiting, 1)
    assert not behind.done()  # it shares x@ with the second, still in flight
    second.done()
    second.done()  # twice is harmless
    await asyncio.wait_for(behind, 1)
    for turn in (other, third):
        turn.done()
    assert len(turns) == 0  # nothing in flight: nothing remembered
