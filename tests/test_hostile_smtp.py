"""One hostile mail must not take the node down: over real SMTP, with analyser processes.

For each reproduction from the hardening issue: the message gets a defined SMTP answer (a
refusal at DATA, or 250 and then a final stored status with a reason, never ``failed`` after
retries), the SMTP loop is never held for the issue's bound by one callback while the
message is received and processed (NOOP on a fresh connection keeps being answered), and a
normal reply from a participant is still delivered afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from mailbot.bots.default import app
from mailbot.serve import Node, running
from mailbot.store.models import Comment, InboundStatus
from mailbot.testing import (
    SmtpSink,
    Thread,
    build_mail,
    make_thread,
    settings_for,
    smtp_send,
    wait_for_status,
)
from tests.loop_watch import watch_loop

HELD_BOUND = 0.5  # seconds: the bound for a fresh connection's NOOP


def _head(to: str, extra: str = "", sender: str = "alice@example.com") -> str:
    return (
        f"From: {sender}\r\nTo: {to}\r\nMessage-ID: <h.{time.time_ns()}@client.example>\r\n{extra}"
    )


def encoded_word_bomb(to: str) -> bytes:
    words = b"\r\n ".join(
        b" ".join(b"=?utf-8?q?x%d?=" % i for i in range(j, j + 50)) for j in range(0, 25000, 50)
    )
    return _head(to).encode() + b"Subject: " + words + b"\r\n\r\nhi\r\n"


def comma_from(to: str) -> bytes:
    return (
        f"From: {',' * 60_000}<alice@example.com>\r\nTo: {to}\r\nSubject: Re: x\r\n\r\nhi\r\n"
    ).encode()


def folded_disposition(to: str) -> bytes:
    params = "".join(f";\r\n x{i}=y" for i in range(60_000 // 8))
    return (
        _head(to, 'Subject: Re: x\r\nContent-Type: multipart/mixed; boundary="b"\r\n')
        + "\r\n--b\r\nContent-Type: text/plain\r\n\r\nThe reply.\r\n--b\r\n"
        + f"Content-Disposition: attachment{params}\r\n\r\ndata\r\n--b--\r\n"
    ).encode()


def bare_message_id(to: str) -> bytes:
    return (
        f"From: alice@example.com\r\nTo: {to}\r\nSubject: Re: x\r\nMessage-ID: 12345\r\n\r\n"
        "A reply with a bare Message-ID.\r\n"
    ).encode()


def charset(name: bytes) -> Callable[[str], bytes]:
    def build(to: str) -> bytes:
        return (
            _head(to, "Subject: Re: x\r\n").encode()
            + b"Content-Type: text/plain; charset="
            + name
            + b"\r\n\r\nA reply in an odd charset.\r\n"
        )

    return build


def nested_parts(to: str) -> bytes:
    head = _head(to, "Subject: Re: x\r\n").encode()
    body = b""
    for i in range(1000):
        body += b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
    return head + body + b"Content-Type: text/plain\r\n\r\ndeep\r\n"


def parenthesised_from(to: str) -> bytes:
    return (
        f"From: {'(' * 1000}alice@example.com\r\nTo: {to}\r\nSubject: Re: x\r\n\r\nhi\r\n"
    ).encode()


def nul_bytes(to: str) -> bytes:
    return (_head(to, "Subject: Re: n\x00l\r\n") + "\r\nA reply\x00 with NULs.\r\n").encode()


HOSTILE: dict[str, Callable[[str], bytes]] = {
    "encoded-word-bomb": encoded_word_bomb,
    "60k-commas-in-from": comma_from,
    "60k-content-disposition": folded_disposition,
    "message-id-12345": bare_message_id,
    "charset-undefined": charset(b"undefined"),
    "charset-idna": charset(b"idna"),
    "charset-with-nul": charset(b"utf\x00-8"),
    "1000-nested-parts": nested_parts,
    "1000-parentheses-in-from": parenthesised_from,
    "nul-bytes": nul_bytes,
}


@pytest.fixture
async def node(tmp_path: Path, sink: SmtpSink) -> AsyncIterator[Node]:
    # Real analyser processes, as `mailbot serve` runs them.
    settings = settings_for(tmp_path, sink, cpu_workers=2)
    async with running(settings, app, http=False) as started:
        yield started


async def noop(port: int) -> None:
    """A fresh connection's NOOP is answered (a stuck loop would hang here until the timeout)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(30):
            assert (await reader.readline()).startswith(b"220")
            writer.write(b"NOOP\r\n")
            await writer.drain()
            assert (await reader.readline()).startswith(b"250")
    finally:
        writer.write(b"QUIT\r\n")
        writer.close()
        await writer.wait_closed()


async def normal_reply_is_delivered(node: Node, thread: Thread, text: str) -> None:
    address = thread.addresses["alice"]
    raw = build_mail("alice@example.com", address, text)
    result = await smtp_send(node.smtp_port, "alice@example.com", [address], raw)
    assert result.data_code == 250, result
    row = await wait_for_status(node.sessions, result.inbound_id, timeout=30)
    assert row.status == InboundStatus.delivered, row.reason
    async with node.sessions() as session:
        body = await session.scalar(
            select(Comment.body).where(Comment.inbound_id == result.inbound_id)
        )
    assert body == text


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_a_hostile_mail_gets_a_defined_answer_and_normal_mail_still_flows(
    node: Node, name: str
) -> None:
    thread = await make_thread(node, people=("alice", "bob"))
    address = thread.addresses["alice"]
    with watch_loop() as held:
        sending = asyncio.create_task(
            smtp_send(node.smtp_port, "alice@example.com", [address], HOSTILE[name](address))
        )
        await noop(node.smtp_port)
        result = await sending
        assert result.data_code is not None
        if result.data_code == 250:
            waiting = asyncio.create_task(
                wait_for_status(node.sessions, result.inbound_id, timeout=60)
            )
            while not waiting.done():  # NOOP is answered while the worker has the message
                await noop(node.smtp_port)
                await asyncio.sleep(0.05)
            row = waiting.result()
            assert row.status in {InboundStatus.delivered, InboundStatus.rejected}, row.reason
            assert row.reason or row.status == InboundStatus.delivered
            assert row.attempts == 1  # decided once: never retried
        else:
            assert 500 <= result.data_code < 600, result  # refused for good, with a reason
            assert result.data_message
    assert held.longest < HELD_BOUND, held
    await normal_reply_is_delivered(node, thread, f"Still here after {name}.")


async def test_the_loop_watch_sees_a_callback_that_holds_the_loop() -> None:
    with watch_loop() as held:
        await asyncio.sleep(0)
        time.sleep(HELD_BOUND)  # what a parse on the loop would do
        await asyncio.sleep(0)
    assert held.longest >= HELD_BOUND and "test_the_loop_watch" in held.culprit
