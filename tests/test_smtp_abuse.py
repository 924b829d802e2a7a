"""SMTP stays open to real senders under abuse, and 8-bit commands get a 5xx at the command.

The limits on a hand-turned clock first, then over real loopback sockets against a running
node: exact bytes through ``asyncio.open_connection``, and a second client address
(``127.0.0.2``) where a test needs someone other than the abuser.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from mailbot.bots.default import app
from mailbot.errors import ConfigError
from mailbot.serve import Node, running
from mailbot.smtp import ratelimit
from mailbot.smtp.ratelimit import Limits, RefusalWindow
from mailbot.store import tokens
from mailbot.store.db import database, upgrade
from mailbot.store.models import InboundMessage, InboundStatus
from mailbot.testing import (
    SmtpSink,
    build_mail,
    make_thread,
    settings_for,
    smtp_send,
    wait_for_status,
)

OTHER_IP = "127.0.0.2"  # Linux routes all of 127/8 to loopback: a second client address


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the limits, on a clock the test turns -------------------------------------------------


def test_loopback_is_held_to_the_per_ip_connection_cap_unless_listed_as_exempt(
    tmp_path: Path,
) -> None:
    limits = Limits(settings_for(tmp_path, max_connections_per_ip=2))
    assert limits.connect("127.0.0.1") is None
    assert limits.connect("127.0.0.1") is None
    refused = limits.connect("127.0.0.1")
    assert refused is not None and refused.startswith("421 4.7.0") and "127.0.0.1" in refused
    assert limits.connect("::1") is None  # another client
    limits.disconnect("127.0.0.1")
    assert limits.connect("127.0.0.1") is None

    proxied = Limits(
        settings_for(tmp_path, max_connections_per_ip=2, connection_limit_exempt=["127.0.0.0/8"])
    )
    assert all(proxied.connect("127.0.0.1") is None for _ in range(10))
    assert proxied.connect("192.0.2.1") is None and proxied.connect("192.0.2.1") is None
    assert proxied.connect("192.0.2.1") is not None


def test_loopback_stays_exempt_from_the_per_minute_connection_rate(tmp_path: Path) -> None:
    limits = Limits(settings_for(tmp_path, connections_per_minute_per_ip=2), Clock())
    for _ in range(5):
        assert limits.connect("127.0.0.1") is None
        limits.disconnect("127.0.0.1")
    assert limits.connect("192.0.2.1") is None and limits.connect("192.0.2.1") is None
    refused = limits.connect("192.0.2.1")
    assert refused is not None and "this minute" in refused


def test_a_bad_connection_exempt_network_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="connection_limit_exempt"):
        Limits(settings_for(tmp_path, connection_limit_exempt=["127.0.0.0/40"]))


def test_the_node_is_stressed_once_open_connections_reach_the_stress_share(
    tmp_path: Path,
) -> None:
    settings = settings_for(
        tmp_path,
        max_connections=10,
        smtp_stress_at=0.5,
        smtp_idle_timeout=300,
        smtp_stress_idle_timeout=10,
    )
    limits = Limits(settings)
    for n in range(4):
        limits.connect(f"192.0.2.{n}")
    assert not limits.stressed and limits.current_idle_timeout() == 300
    limits.connect("192.0.2.99")
    assert limits.stressed and limits.current_idle_timeout() == 10
    limits.disconnect("192.0.2.99")
    assert limits.current_idle_timeout() == 300


def test_refusals_past_the_free_ones_wait_longer_each_time_up_to_the_cap() -> None:
    clock = Clock()
    window = RefusalWindow(free=3, delay=0.5, max_delay=2.0, clock=clock)
    waits = [window.refused("192.0.2.1") for _ in range(8)]
    assert waits == [0, 0, 0, 0.5, 1.0, 1.5, 2.0, 2.0]
    assert window.refused("192.0.2.2") == 0  # another client starts free
    clock.now += 61  # a minute later the slate is clean
    assert window.refused("192.0.2.1") == 0


def test_ipv6_clients_are_counted_by_their_slash_64() -> None:
    window = RefusalWindow(free=1, delay=1.0, max_delay=5.0, clock=Clock())
    assert window.refused("2001:db8:1:2::1") == 0
    assert window.refused("2001:db8:1:2:ffff::7") == 1.0  # same /64, another address
    assert window.refused("2001:db8:1:3::1") == 0


def test_the_refusal_window_keeps_bounded_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "PRUNE_AT", 100)
    clock = Clock()
    window = RefusalWindow(free=3, delay=0.5, max_delay=5.0, clock=clock)
    for _ in range(1000):  # one prober: the times kept stop at what reaches the cap
        window.refused("192.0.2.1")
    assert len(window._seen["192.0.2.1"]) <= 3 + 10 + 1
    for n in range(1000):  # a scan from many addresses: the oldest are forgotten
        window.refused(f"10.0.{n // 256}.{n % 256}")
    assert len(window) == 100
    clock.now += 61
    window.refused("192.0.2.1")
    assert len(window) == 1  # expired clients go as soon as anyone is counted


def test_a_delay_of_zero_turns_the_slowdown_off() -> None:
    window = RefusalWindow(free=0, delay=0, max_delay=5.0, clock=Clock())
    assert [window.refused("192.0.2.1") for _ in range(20)] == [0] * 20
    assert len(window) == 0


# --- over real sockets -------------------------------------------------------------------


@dataclass
class Raw:
    """One SMTP connection that sends exact bytes and reads whole replies."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        return cls(reader, writer)

    async def reply(self) -> str:
        """The last line of the next reply ("" when the server closed instead)."""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 30)
            if not line or line[3:4] != b"-":
                return line.decode("utf-8", "replace").rstrip("\r\n")

    async def command(self, line: bytes) -> str:
        self.writer.write(line + b"\r\n")
        return await self.reply()

    async def hello(self, mail_from: bytes = b"<prober@example.net>") -> None:
        assert (await self.reply()).startswith("220")
        assert (await self.command(b"EHLO client.example")).startswith("250")
        assert (await self.command(b"MAIL FROM:" + mail_from)).startswith("250")

    async def closed_by_server(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 30) == b""

    async def close(self) -> None:
        self.writer.close()
        # A socket the server already dropped may report a reset: not what is tested.
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
async def raws() -> AsyncIterator[list[Raw]]:
    """Raw connections a test opens; closed at the end, however the test ended."""
    opened: list[Raw] = []
    yield opened
    for raw in opened:
        await raw.close()


def _unknown() -> bytes:
    return f"<{tokens.reply_address(tokens.mint_token(), 'localhost')}>".encode()


async def test_a_loopback_client_over_its_cap_gets_421_and_another_address_still_delivers(
    tmp_path: Path, sink: SmtpSink, raws: list[Raw]
) -> None:
    settings = settings_for(tmp_path, sink, max_connections_per_ip=3)
    async with running(settings, app) as node:
        for _ in range(3):  # idle connections from loopback, which used to be exempt
            raws.append(await Raw.open(node.smtp_port))
            assert (await raws[-1].reply()).startswith("220")
        over = await Raw.open(node.smtp_port)
        raws.append(over)
        line = await over.reply()
        assert line.startswith("421 4.7.0") and "127.0.0.1" in line
        assert await over.closed_by_server()

        thread = await make_thread(node)
        address = thread.addresses["alice"]
        raw = build_mail("alice@example.com", address, "Still open for real senders.")
        result = await smtp_send(
            node.smtp_port, "alice@example.com", [address], raw, source_address=(OTHER_IP, 0)
        )
        assert result.data_code == 250, result
        row = await wait_for_status(node.sessions, result.inbound_id)
        assert row.status == InboundStatus.delivered, row.reason
        assert row.client_ip == OTHER_IP


async def test_idle_sessions_are_closed_with_421_sooner_once_the_node_is_stressed(
    tmp_path: Path, raws: list[Raw]
) -> None:
    settings = settings_for(
        tmp_path,
        max_connections=4,
        smtp_stress_at=0.5,  # stressed from 2 open connections
        smtp_idle_timeout=120,
        smtp_stress_idle_timeout=0.5,
    )
    async with running(settings, app, work=False, http=False) as node:
        first = await Raw.open(node.smtp_port)
        raws.append(first)
        assert (await first.reply()).startswith("220")
        await asyncio.sleep(1.5)  # three stress timeouts: alone, it is not closed
        assert (await first.command(b"NOOP")).startswith("250")

        second = await Raw.open(node.smtp_port)
        raws.append(second)
        assert (await second.reply()).startswith("220")
        # Two open: the existing idle session and the new one both get the short timeout.
        for session in (first, second):
            assert (await session.reply()).startswith("421 4.4.2")
            assert await session.closed_by_server()


async def test_a_session_is_cut_off_after_the_error_limit(tmp_path: Path, raws: list[Raw]) -> None:
    settings = settings_for(tmp_path, smtp_hard_error_limit=3, bad_recipient_delay=0)
    async with running(settings, app, work=False, http=False) as node:
        prober = await Raw.open(node.smtp_port)
        raws.append(prober)
        await prober.hello()
        for _ in range(3):
            assert (await prober.command(b"RCPT TO:" + _unknown())).startswith("550 5.1.1")
        line = await prober.command(b"RCPT TO:" + _unknown())
        assert line.startswith("421 4.7.0") and "Too many errors" in line
        assert await prober.closed_by_server()

        fresh = await Raw.open(node.smtp_port)  # the limit is per session
        raws.append(fresh)
        await fresh.hello()
        assert (await fresh.command(b"RCPT TO:" + _unknown())).startswith("550 5.1.1")


async def test_junk_lines_count_as_errors_too(tmp_path: Path, raws: list[Raw]) -> None:
    settings = settings_for(tmp_path, smtp_hard_error_limit=2)
    async with running(settings, app, work=False, http=False) as node:
        junk = await Raw.open(node.smtp_port)
        raws.append(junk)
        assert (await junk.reply()).startswith("220")
        assert (await junk.command(b"")).startswith("500")
        assert (await junk.command(b"\xff\xfe")).startswith("500")
        assert (await junk.command(b"")).startswith("421 4.7.0")
        assert await junk.closed_by_server()


async def test_a_delivered_mail_clears_the_error_count(tmp_path: Path, raws: list[Raw]) -> None:
    settings = settings_for(tmp_path, smtp_hard_error_limit=3, bad_recipient_delay=0)
    async with running(settings, app, work=False, http=False) as node:
        thread = await make_thread(node)
        address = thread.addresses["alice"].encode()
        client = await Raw.open(node.smtp_port)
        raws.append(client)
        await client.hello(b"<alice@example.com>")
        for _ in range(2):
            assert (await client.command(b"RCPT TO:" + _unknown())).startswith("550")
        assert (await client.command(b"RCPT TO:<" + address + b">")).startswith("250")
        assert (await client.command(b"DATA")).startswith("354")
        mail = build_mail("alice@example.com", address.decode(), "One good mail.")
        assert (await client.command(mail.replace(b"\n", b"\r\n") + b".")).startswith("250")
        assert (await client.command(b"MAIL FROM:<alice@example.com>")).startswith("250")
        for _ in range(3):  # a fresh budget of three
            assert (await client.command(b"RCPT TO:" + _unknown())).startswith("550")
        assert (await client.command(b"RCPT TO:" + _unknown())).startswith("421 4.7.0")


async def test_unknown_addresses_past_the_free_ones_are_refused_ever_more_slowly(
    tmp_path: Path, raws: list[Raw]
) -> None:
    settings = settings_for(
        tmp_path,
        bad_recipients_free=2,
        bad_recipient_delay=0.2,
        bad_recipient_max_delay=5.0,
        smtp_hard_error_limit=0,  # off: this test is about the slowdown alone
    )
    async with running(settings, app, work=False, http=False) as node:
        prober = await Raw.open(node.smtp_port)
        raws.append(prober)
        await prober.hello()
        took = []
        for _ in range(5):
            start = time.monotonic()
            assert (await prober.command(b"RCPT TO:" + _unknown())).startswith("550 5.1.1")
            took.append(time.monotonic() - start)
        # Lower bounds only: the free two may take any time, then 0.2 s more each.
        assert took[2] >= 0.2 and took[3] >= 0.4 and took[4] >= 0.6, took


async def test_a_slowed_prober_does_not_slow_another_address(
    tmp_path: Path, raws: list[Raw]
) -> None:
    delay = 3.0
    settings = settings_for(
        tmp_path, bad_recipients_free=1, bad_recipient_delay=delay, bad_recipient_max_delay=delay
    )
    async with running(settings, app, work=False, http=False) as node:
        prober, other = await Raw.open(node.smtp_port), await Raw.open(node.smtp_port, OTHER_IP)
        raws.extend([prober, other])
        await prober.hello()
        await other.hello(b"<someone@example.org>")
        assert (await prober.command(b"RCPT TO:" + _unknown())).startswith("550")  # the free one
        start = time.monotonic()
        slowed = asyncio.create_task(prober.command(b"RCPT TO:" + _unknown()))
        try:
            mistyped = await other.command(b"RCPT TO:" + _unknown())
            other_took = time.monotonic() - start
            assert mistyped.startswith("550 5.1.1")
            assert not slowed.done()  # answered while the prober still waits
            assert other_took < delay  # generous: a lookup, not the prober's delay
            assert (await slowed).startswith("550 5.1.1")
            assert time.monotonic() - start >= delay
        finally:
            slowed.cancel()


EIGHT_BIT_COMMANDS = {
    "8-bit RCPT": (b"RCPT TO:<\xff\xfe@localhost>", "553 5.1.3"),
    "NUL in RCPT": (b"RCPT TO:<reply+a\x00b@localhost>", "553 5.1.3"),
    "RCPT local part over 64 octets": (b"RCPT TO:<" + b"a" * 65 + b"@localhost>", "553 5.1.3"),
    "8-bit MAIL FROM": (b"MAIL FROM:<\xff\xfe@example.com>", "553 5.1.7"),
    "NUL in MAIL FROM": (b"MAIL FROM:<a\x00b@example.com>", "553 5.1.7"),
    "control character in MAIL FROM": (b"MAIL FROM:<a\x1bb@example.com>", "553 5.1.7"),
    "MAIL FROM over 254 octets": (b"MAIL FROM:<" + b"a" * 60 + b"@" + b"b" * 200 + b">", "553"),
    "unicode sender without SMTPUTF8": (b"MAIL FROM:<j\xc3\xb6rg@example.com>", "553 5.6.7"),
    "8-bit EHLO": (b"EHLO \xff\xfe.example", "501 5.5.2"),
    "8-bit HELO": (b"HELO \xc3(.example", "501 5.5.2"),
    "NUL in EHLO": (b"EHLO a\x00b.example", "501 5.5.2"),
    "HELO of 300 characters": (b"HELO " + b"h" * 300, "501 5.5.2"),
}


@pytest.mark.parametrize("name", sorted(EIGHT_BIT_COMMANDS))
async def test_a_malformed_command_gets_a_5xx_at_that_command_and_no_traceback(
    name: str, node: Node, raws: list[Raw], caplog: pytest.LogCaptureFixture
) -> None:
    line, expected = EIGHT_BIT_COMMANDS[name]
    client = await Raw.open(node.smtp_port)
    raws.append(client)
    assert (await client.reply()).startswith("220")
    if not line.startswith((b"EHLO", b"HELO")):
        assert (await client.command(b"EHLO client.example")).startswith("250")
    if line.startswith(b"RCPT"):
        assert (await client.command(b"MAIL FROM:<someone@example.com>")).startswith("250")
    answer = await client.command(line)
    assert answer.startswith(expected), answer
    # The session goes on, with nothing of the refused command kept.
    if line.startswith((b"EHLO", b"HELO")):
        assert (await client.command(b"MAIL FROM:<someone@example.com>")).startswith("503")
    elif line.startswith(b"MAIL"):
        assert (await client.command(b"RCPT TO:<support@localhost>")).startswith("503")
    assert (await client.command(b"NOOP")).startswith("250")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_a_command_echoed_in_a_reply_cannot_break_it(
    node: Node, raws: list[Raw], caplog: pytest.LogCaptureFixture
) -> None:
    client = await Raw.open(node.smtp_port)
    raws.append(client)
    assert (await client.reply()).startswith("220")
    # aiosmtpd echoes an address it cannot parse: not a 451, and no raw control byte back.
    answer = await client.command(b"VRFY @\xff\x00\rx")
    assert answer.startswith("502") and "\x00" not in answer and "\r" not in answer, answer
    assert (await client.command(b"NOOP")).startswith("250")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_the_null_sender_is_still_accepted(node: Node, raws: list[Raw]) -> None:
    client = await Raw.open(node.smtp_port)
    raws.append(client)
    await client.hello(b"<>")
    assert (await client.command(b"RCPT TO:<support@localhost>")).startswith(("250", "550"))


async def _deliver_utf8(node: Node, raws: list[Raw], helo: str, sender: str) -> InboundMessage:
    """One reply over SMTPUTF8 from a client that says ``helo``; the stored row, processed."""
    thread = await make_thread(node)
    address = thread.addresses["alice"]
    client = await Raw.open(node.smtp_port)
    raws.append(client)
    assert (await client.reply()).startswith("220")
    assert (await client.command(f"EHLO {helo}".encode())).startswith("250")
    answer = await client.command(f"MAIL FROM:<{sender}> SMTPUTF8".encode())
    assert answer.startswith("250"), answer
    assert (await client.command(f"RCPT TO:<{address}>".encode())).startswith("250")
    assert (await client.command(b"DATA")).startswith("354")
    mail = build_mail("alice@example.com", address, "Sent through an internationalized relay.")
    queued = await client.command(mail.replace(b"\n", b"\r\n") + b".")
    assert queued.startswith("250"), queued
    inbound_id = int(queued.rsplit(" ", 1)[1])
    row = await wait_for_status(node.sessions, inbound_id)
    assert row.status == InboundStatus.delivered, row.reason
    async with node.sessions() as session:
        stored = await session.scalar(select(InboundMessage).where(InboundMessage.id == inbound_id))
    assert stored is not None
    return stored


async def test_a_utf8_sender_that_says_smtputf8_is_stored_and_processed(
    node: Node, raws: list[Raw]
) -> None:
    stored = await _deliver_utf8(node, raws, "bücher.example", "jörg@bücher.example")
    assert (stored.mail_from, stored.helo) == ("jörg@bücher.example", "bücher.example")


@pytest.mark.postgres
async def test_on_postgresql_what_is_accepted_at_the_command_is_stored(
    tmp_path: Path, sink: SmtpSink, postgres_url: str, raws: list[Raw]
) -> None:
    """The longest names the commands let through fit the columns, and what would not
    (a NUL, a 300-character HELO: 451 after DATA before) is refused at the command."""
    async with database(postgres_url) as (engine, _):
        await upgrade(engine)
    settings = settings_for(tmp_path, sink, database_url=postgres_url)
    async with running(settings, app) as node:
        refused = await Raw.open(node.smtp_port)
        raws.append(refused)
        assert (await refused.reply()).startswith("220")
        assert (await refused.command(b"HELO " + b"h" * 300)).startswith("501 5.5.2")
        assert (await refused.command(b"EHLO client.example")).startswith("250")
        assert (await refused.command(b"MAIL FROM:<a\x00b@example.com>")).startswith("553")

        helo = "ö" * 127 + "x"  # 255 octets in UTF-8: the longest allowed
        local = "ü" * 32  # 64 octets
        sender = f"{local}@{'b' * 60}.{'c' * 60}.{'d' * 59}.example"  # 254 octets
        assert len(helo.encode()) == 255 and len(sender.encode()) == 254
        stored = await _deliver_utf8(node, raws, helo, sender)
        assert (stored.helo, stored.mail_from) == (helo, sender)
