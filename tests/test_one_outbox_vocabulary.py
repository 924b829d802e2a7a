"""One backoff, one wake-or-poll wait, one composer, one set of SMTP answers (issue #9)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

import pytest

from mailbot.config import Settings
from mailbot.headers import UnsafeMessage
from mailbot.outbound.compose import AUTO_GENERATED, AUTO_REPLIED, compose
from mailbot.retry import MAX_DOUBLINGS, backoff, wait_for_work
from mailbot.smtp import handler as receive
from mailbot.smtp import listener, ratelimit, replies


def test_the_backoff_doubles_from_the_base_after_each_failed_try() -> None:
    assert [backoff(2.0, n) for n in (1, 2, 3, 4)] == [timedelta(seconds=s) for s in (2, 4, 8, 16)]


def test_the_backoff_stops_growing_and_never_overflows_however_many_tries() -> None:
    cap = timedelta(seconds=2.0 * 2**MAX_DOUBLINGS)
    assert backoff(2.0, MAX_DOUBLINGS + 1) == cap
    assert backoff(2.0, 10**9) == cap


async def test_waiting_for_work_returns_when_woken() -> None:
    wake = asyncio.Event()
    waiting = asyncio.create_task(wait_for_work(wake, 3600))
    await asyncio.sleep(0)
    assert not waiting.done()
    wake.set()
    async with asyncio.timeout(60):  # generous: the wait itself would be an hour
        await waiting


async def test_waiting_for_work_returns_when_the_poll_interval_passes() -> None:
    async with asyncio.timeout(60):
        await wait_for_work(asyncio.Event(), 0.01)


async def test_a_cancellation_that_arrives_as_work_is_signalled_still_stops_the_wait() -> None:
    # The race asyncio.wait_for loses on Python 3.11: the loop must still end.
    wake = asyncio.Event()
    waiting = asyncio.create_task(wait_for_work(wake, 3600))
    await asyncio.sleep(0)
    wake.set()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


def _compose(
    reply_to: str | None = None,
    thread: tuple[str | None, str | None] = (None, "<parent@client.test>"),
    auto_submitted: str = AUTO_REPLIED,
    conversation_key: str | None = None,
    message_id: str = "<n@bot.test>",
) -> EmailMessage:
    raw = compose(
        Settings(),
        sender_name="Mailbot",
        to_name="",
        recipient="alice@client.test",
        reply_to=reply_to,
        subject="[Rejected] hello",
        body="not posted",
        message_id=message_id,
        thread=thread,
        auto_submitted=auto_submitted,
        conversation_key=conversation_key,
    )
    msg = message_from_bytes(raw, _class=EmailMessage, policy=default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_a_notice_carries_no_reply_address_and_says_it_answers_automatically() -> None:
    msg = _compose()
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Reply-To"] is None
    assert msg["X-Mailbot-Conversation"] is None
    assert msg["In-Reply-To"] == msg["References"] == "<parent@client.test>"


def test_a_notification_carries_its_reply_address_thread_and_conversation() -> None:
    msg = _compose(
        reply_to="reply+abc@bot.test",
        thread=("<root@bot.test>", "<parent@client.test>"),
        auto_submitted=AUTO_GENERATED,
        conversation_key="ticket-1",
    )
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Reply-To"] == "reply+abc@bot.test"
    assert msg["X-Mailbot-Conversation"] == "ticket-1"
    assert msg["References"] == "<root@bot.test> <parent@client.test>"


@pytest.mark.parametrize(
    ("message_id", "auto_submitted"),
    [
        ("<n@bot.test>\r\nBcc: victim@example.com", AUTO_GENERATED),  # a header smuggled in
        ("n@bot.test", AUTO_GENERATED),  # no angle brackets: no message-id
        (" <n@bot.test>", AUTO_GENERATED),  # would be set with its space
        ("<n@bot.test>", "no\r\nBcc: victim@example.com"),
        ("<n@bot.test>", "auto-notified"),  # not one of ours
    ],
)
def test_the_values_set_raw_are_refused_unless_they_are_what_mailbot_makes(
    message_id: str, auto_submitted: str
) -> None:
    # Set raw (no header registry parse), so checked here: nothing else would stop a CR LF.
    with pytest.raises((UnsafeMessage, ValueError)):
        _compose(message_id=message_id, auto_submitted=auto_submitted)


def test_every_smtp_answer_is_defined_once_and_still_importable_where_it_was() -> None:
    answers = {n for n, v in vars(replies).items() if isinstance(v, replies.Reply)}
    for module in (receive, listener, ratelimit):
        used = {n for n, v in vars(module).items() if isinstance(v, replies.Reply)}
        assert used <= answers
        assert all(getattr(module, n) is getattr(replies, n) for n in used)
    assert {"QUEUED", "IDLE_TIMEOUT", "SERVER_BUSY"} <= answers
    # The old path works through an implicit re-export, which strict mypy does not see.
    assert receive.Reply is replies.Reply  # type: ignore[attr-defined]
