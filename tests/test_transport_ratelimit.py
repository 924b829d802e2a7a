"""Rate limits: the token buckets on a hand-turned clock, then the SMTP answers over sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from mailbot.bots.default import app
from mailbot.errors import ConfigError
from mailbot.serve import running
from mailbot.smtp import ratelimit
from mailbot.smtp.ratelimit import Limits, TokenBuckets
from mailbot.smtp.submitters import hash_password
from mailbot.testing import settings_for
from tests.transport import PASSWORD, client, greeting


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limits(tmp_path: Path, clock: Clock | None = None, **overrides: Any) -> Limits:
    values: dict[str, Any] = {
        "rate_limit_exempt": [],
        "messages_per_minute_per_ip": 0,
        "messages_per_minute_per_sender": 0,
        **overrides,
    }
    return Limits(settings_for(tmp_path, **values), clock or Clock())


# --- the buckets, on a clock the test turns ---------------------------------------------


def test_bucket_allows_a_burst_of_n_then_one_every_60_over_n_seconds() -> None:
    clock = Clock()
    buckets = TokenBuckets(per_minute=6, clock=clock)
    for _ in range(6):
        assert buckets.ready("a")
        buckets.take("a")
    assert not buckets.ready("a")
    assert buckets.ready("b")  # keys are independent
    clock.now += 9.9
    assert not buckets.ready("a")
    clock.now += 0.1  # 10 s = 60/6: one token back
    assert buckets.ready("a")
    buckets.take("a")
    assert not buckets.ready("a")
    clock.now += 3600  # never more than the burst
    for _ in range(6):
        buckets.take("a")
    assert not buckets.ready("a")


def test_a_limit_of_zero_is_off() -> None:
    buckets = TokenBuckets(per_minute=0, clock=Clock())
    for _ in range(1000):
        assert buckets.ready("a")
        buckets.take("a")
    assert len(buckets) == 0


def test_idle_keys_are_forgotten_when_the_table_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "PRUNE_AT", 10)
    clock = Clock()
    buckets = TokenBuckets(per_minute=60, clock=clock)
    for n in range(10):
        buckets.take(f"scanner-{n}")
    buckets.take("busy")  # the 11th key prunes: nothing is idle yet
    assert len(buckets) == 11
    for _ in range(30):
        buckets.take("busy")
    clock.now += 2  # the one-token keys are full again; "busy" is not
    buckets.take("new")
    assert len(buckets) == 2


def test_message_limits_count_per_ip_and_per_sender(tmp_path: Path) -> None:
    limits = _limits(tmp_path, messages_per_minute_per_ip=3, messages_per_minute_per_sender=2)
    assert limits.message("192.0.2.1", "a@example.com", authenticated=False) is None
    assert limits.message("192.0.2.1", "A@example.com", authenticated=False) is None
    refused = limits.message("192.0.2.1", "a@example.com", authenticated=False)
    assert refused is not None and refused.startswith("451 4.7.1")
    assert "a@example.com" in refused
    # The refusal used none of the IP's budget: one message is left for another sender.
    assert limits.message("192.0.2.1", "b@example.com", authenticated=False) is None
    refused = limits.message("192.0.2.1", "c@example.com", authenticated=False)
    assert refused is not None and "192.0.2.1" in refused
    assert limits.message("192.0.2.2", "c@example.com", authenticated=False) is None


def test_the_null_sender_is_counted_per_client_not_as_one_sender(tmp_path: Path) -> None:
    limits = _limits(tmp_path, messages_per_minute_per_sender=1)
    assert limits.message("192.0.2.1", "<>", authenticated=False) is None
    assert limits.message("192.0.2.1", "<>", authenticated=False) is not None
    assert limits.message("192.0.2.2", "<>", authenticated=False) is None


def test_authenticated_and_exempt_clients_are_not_held_to_message_limits(tmp_path: Path) -> None:
    limits = _limits(
        tmp_path, messages_per_minute_per_ip=1, rate_limit_exempt=["10.0.0.0/8", "::1/128"]
    )
    for _ in range(5):
        assert limits.message("192.0.2.1", "a@example.com", authenticated=True) is None
        assert limits.message("10.1.2.3", "a@example.com", authenticated=False) is None
        assert limits.message("::1", "a@example.com", authenticated=False) is None
    assert limits.message("192.0.2.1", "a@example.com", authenticated=False) is None
    assert limits.message("192.0.2.1", "a@example.com", authenticated=False) is not None


def test_connection_limits_count_open_connections_and_free_them(tmp_path: Path) -> None:
    limits = _limits(tmp_path, max_connections_per_ip=2, connections_per_minute_per_ip=0)
    assert limits.connect("192.0.2.1") is None
    assert limits.connect("192.0.2.1") is None
    refused = limits.connect("192.0.2.1")
    assert refused is not None and refused.startswith("421 4.7.0")
    assert limits.connect("192.0.2.2") is None
    limits.disconnect("192.0.2.1")
    assert limits.connect("192.0.2.1") is None
    assert limits.open_total == 3


def test_a_bad_exempt_network_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rate_limit_exempt"):
        _limits(tmp_path, rate_limit_exempt=["10.0.0.0/33"])


# --- over real sockets --------------------------------------------------------------------


def _settings(tmp_path: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "rate_limit_exempt": [],  # the tests connect from loopback, exempt by default
        "connections_per_minute_per_ip": 0,
        "messages_per_minute_per_ip": 0,
        "messages_per_minute_per_sender": 0,
        **overrides,
    }
    return settings_for(tmp_path, **values)


async def test_connections_over_the_per_ip_limit_are_told_421_and_closed(tmp_path: Path) -> None:
    async with running(
        _settings(tmp_path, max_connections_per_ip=2), app, work=False, http=False
    ) as node:
        first, second = client(node), client(node)
        await first.connect()
        await second.connect()
        line, closed = await greeting(node.smtp_port)
        assert line.startswith("421 4.7.0") and "127.0.0.1" in line
        assert closed
        await first.quit()
        # The slot is free once the server has seen the connection end.
        for _ in range(200):
            line, _closed = await greeting(node.smtp_port)
            if line.startswith("220"):
                break
            await asyncio.sleep(0.01)
        assert line.startswith("220")
        await second.quit()


async def test_connecting_too_often_in_a_minute_is_told_421(tmp_path: Path) -> None:
    async with running(
        _settings(tmp_path, connections_per_minute_per_ip=3), app, work=False, http=False
    ) as node:
        for _ in range(3):
            smtp = client(node)
            await smtp.connect()
            await smtp.quit()
        line, closed = await greeting(node.smtp_port)
        assert line.startswith("421 4.7.0") and "this minute" in line
        assert closed


async def test_the_total_connection_limit_holds_even_for_exempt_clients(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, max_connections=1)  # per-IP cap (20) is not reached
    async with running(settings, app, work=False, http=False) as node:
        smtp = client(node)
        await smtp.connect()
        line, closed = await greeting(node.smtp_port)
        assert line.startswith("421 4.3.2") and closed
        await smtp.quit()


async def test_messages_over_the_per_ip_limit_are_told_451_at_mail(tmp_path: Path) -> None:
    async with running(
        _settings(tmp_path, messages_per_minute_per_ip=2), app, work=False, http=False
    ) as node:
        smtp = client(node)
        async with smtp:
            for sender in ("a@example.com", "b@example.com"):
                assert (await smtp.mail(sender)).code == 250
                await smtp.rset()
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
                await smtp.mail("c@example.com")
            assert (refused.value.code, refused.value.message.split()[0]) == (451, "4.7.1")
            # The session goes on: a 4xx is "later", not "go away".
            assert (await smtp.noop()).code == 250


async def test_one_sender_over_its_limit_is_told_451_and_others_pass(tmp_path: Path) -> None:
    async with running(
        _settings(tmp_path, messages_per_minute_per_sender=2), app, work=False, http=False
    ) as node:
        smtp = client(node)
        async with smtp:
            for _ in range(2):
                assert (await smtp.mail("loop@example.com")).code == 250
                await smtp.rset()
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
                await smtp.mail("LOOP@example.com")
            assert refused.value.code == 451 and "loop@example.com" in refused.value.message.lower()
            await smtp.rset()
            assert (await smtp.mail("someone-else@example.com")).code == 250


async def test_an_authenticated_submitter_is_not_held_to_the_message_limits(
    tmp_path: Path,
) -> None:
    settings = _settings(
        tmp_path,
        messages_per_minute_per_ip=1,
        smtp_users={"webapp": hash_password(PASSWORD)},
    )
    async with running(settings, app, work=False, http=False) as node:
        anonymous = client(node)
        async with anonymous:
            assert (await anonymous.mail("a@example.com")).code == 250
            await anonymous.rset()
            with pytest.raises(aiosmtplib.SMTPSenderRefused):
                await anonymous.mail("a@example.com")
        submitter = client(node)
        async with submitter:
            await submitter.starttls()
            await submitter.login("webapp", PASSWORD)
            for _ in range(5):
                assert (await submitter.mail("a@example.com")).code == 250
                await submitter.rset()


async def test_a_failed_starttls_handshake_frees_the_connection_slot(tmp_path: Path) -> None:
    async with running(
        _settings(tmp_path, max_connections_per_ip=1), app, work=False, http=False
    ) as node:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.smtp_port)
        assert (await reader.readline()).startswith(b"220")
        writer.write(b"EHLO client.example\r\n")
        while not (await reader.readline()).startswith(b"250 "):
            pass
        writer.write(b"STARTTLS\r\n")
        assert (await reader.readline()).startswith(b"220")
        writer.write(b"this is not a TLS client hello\r\n" * 4)
        await asyncio.wait_for(reader.read(), 10)  # the server gives up and closes
        writer.close()
        for _ in range(200):
            line, _closed = await greeting(node.smtp_port)
            if line.startswith("220"):
                break
            await asyncio.sleep(0.01)
        assert line.startswith("220")
