"""DATA read into one buffer (mailbot/smtp/data.py) gives what aiosmtpd's own reader gives:
the same bytes for every message, and the same answers for oversized ones. Both servers run
over real sockets on loopback and get the same client bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailbot.smtp.data import TOO_LONG, TOO_MUCH, read_data
from mailbot.smtp.handler import MailbotSMTP


class Keep:
    def __init__(self) -> None:
        self.kept: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.original_content, bytes)
        self.kept.append(envelope.original_content)
        return "250 kept"


class Ours(MailbotSMTP):
    line_length_limit = 1000


class Theirs(SMTP):
    line_length_limit = 1000


async def _serve(cls: type[SMTP], keep: Keep) -> tuple[asyncio.Server, int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: cls(keep, data_size_limit=20_000, decode_data=False), "127.0.0.1", 0
    )
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, tuple[int, Keep]]]:
    found: dict[str, tuple[int, Keep]] = {}
    started = []
    for name, cls in (("ours", Ours), ("theirs", Theirs)):
        keep = Keep()
        server, port = await _serve(cls, keep)
        started.append(server)
        found[name] = (port, keep)
    yield found
    for server in started:
        server.close()
        await server.wait_closed()


async def _talk(port: int, data: bytes) -> list[bytes]:
    """One session: every answer after the greeting, up to and including QUIT's."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers: list[bytes] = []

    async def answer() -> bytes:
        line = await reader.readline()
        while line[3:4] == b"-":
            line = await reader.readline()
        return line

    await answer()  # greeting
    for command in (b"HELO client.example\r\n", b"MAIL FROM:<a@example.com>\r\n"):
        writer.write(command)
        answers.append(await answer())
    writer.write(b"RCPT TO:<b@example.com>\r\nDATA\r\n")
    answers += [await answer(), await answer()]
    writer.write(data + b".\r\n")
    answers.append(await answer())
    writer.write(b"NOOP\r\nQUIT\r\n")  # the session goes on after a refused message
    answers += [await answer(), await answer()]
    writer.close()
    await writer.wait_closed()
    return answers


MESSAGES = {
    "plain": b"Subject: hi\r\n\r\nhello\r\n",
    "dot-stuffed": b"Subject: dots\r\n\r\n..leading dot\r\n.\t.tab\r\n...\r\nend\r\n",
    "bare LF inside": b"Subject: lf\r\n\r\none\ntwo\r\n",
    "8-bit and NUL": b"Subject: \xff\xfe\r\n\r\n\x00\x01\x80text\r\n",
    "empty body": b"Subject: nothing\r\n\r\n",
    "long line under the limit": b"X: " + b"a" * 990 + b"\r\n\r\nbody\r\n",
    "line over the limit": b"X: " + b"a" * 1200 + b"\r\n\r\nbody\r\n",
    "over the size limit": b"Subject: big\r\n\r\n"
    + b"y" * 70
    + b"\r\n" * 1
    + (b"z" * 78 + b"\r\n") * 300,
    "a lone dot at the end of a too-long line": b"X: " + b"b" * 1500 + b".\r\n\r\nbody\r\n",
}


@pytest.mark.parametrize("name", MESSAGES)
async def test_our_data_reader_keeps_and_answers_exactly_as_aiosmtpd(
    name: str, servers: dict[str, tuple[int, Keep]]
) -> None:
    results: dict[str, Any] = {}
    for who, (port, keep) in servers.items():
        answers = await _talk(port, MESSAGES[name])
        results[who] = (answers, keep.kept)
    assert results["ours"] == results["theirs"]
    answers, kept = results["ours"]
    assert answers[-1].startswith(b"221")


async def test_the_reader_unstuffs_dots_and_refuses_after_draining() -> None:
    reader = asyncio.StreamReader(limit=1000)
    reader.feed_data(b"..a\r\n.\r\n")
    assert (await read_data(reader, None, 1000)).content == b".a\r\n"
    reader = asyncio.StreamReader(limit=1000)
    reader.feed_data(b"x" * 30 + b"\r\n" + b"y\r\n.\r\nNOOP\r\n")
    refused = await read_data(reader, 20, 1000)
    assert (refused.refusal, refused.content) == (TOO_MUCH, b"")
    assert await reader.readline() == b"NOOP\r\n"  # read to the end of the message, no further
    reader = asyncio.StreamReader(limit=10)
    reader.feed_data(b"x" * 50 + b"\r\n.\r\n")
    assert (await read_data(reader, None, 1000)).refusal == TOO_LONG
