"""RCPT remembers live reply addresses for a moment (mailbot/store/live_tokens.py): never a
stranger's guess, never past a revocation made here, never past the token's expiry."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from mailbot.bots.default import app
from mailbot.serve import Node, running
from mailbot.store import live_tokens, tokens
from mailbot.store.models import InboundStatus, ReplyToken, utcnow
from mailbot.testing import (
    SendResult,
    SmtpSink,
    build_mail,
    make_thread,
    settings_for,
    smtp_send,
    wait_for_status,
)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_remembered_for_its_seconds_never_past_its_expiry() -> None:
    clock = Clock()
    recent = live_tokens.RecentlyLive(2.0, size=3, clock=clock)
    recent.remember("a", "example.org", left=3600)
    recent.remember("b", "example.org", left=0.5)  # expires before the two seconds are up
    recent.remember("c", "example.org", left=-1)  # already expired: not kept
    assert recent.live("a", "example.org") and recent.live("b", "example.org")
    assert not recent.live("a", "inspect.example.org")  # another domain, another answer
    assert not recent.live("c", "example.org")
    clock.now += 1
    assert recent.live("a", "example.org") and not recent.live("b", "example.org")
    clock.now += 1.5
    assert not recent.live("a", "example.org")
    assert len(recent) == 0


def test_the_oldest_go_first_and_a_revocation_here_forgets_at_once() -> None:
    recent = live_tokens.RecentlyLive(60, size=2, clock=Clock())
    for name in ("a", "b", "c"):
        recent.remember(name, "example.org", left=3600)
    assert not recent.live("a", "example.org")  # pushed out by the third
    assert recent.live("b", "example.org") and recent.live("c", "example.org")
    live_tokens.forget("b")
    assert not recent.live("b", "example.org") and recent.live("c", "example.org")
    recent.remember("c", "inspect.example.org", left=3600)
    live_tokens.forget("c")  # every domain of it
    assert len(recent) == 0


def test_a_lookup_that_read_a_token_before_its_revocation_does_not_remember_it_live() -> None:
    # RCPT read the row, then the revocation here ran, then RCPT comes back to remember it.
    clock = Clock()
    recent = live_tokens.RecentlyLive(2.0, clock=clock)
    live_tokens.forget("a")
    recent.remember("a", "example.org", left=3600)
    assert not recent.live("a", "example.org")
    clock.now += 2.5  # past the seconds: an answer read now is the database's own again
    recent.remember("a", "example.org", left=3600)
    assert recent.live("a", "example.org")


async def _first_reply(node: Node) -> tuple[str, SendResult]:
    """Alice's reply address, and her first mail to it (RCPT remembers the address live)."""
    address = (await make_thread(node)).addresses["alice"]
    mail = build_mail("alice@example.com", address, "one")
    return address, await smtp_send(node.smtp_port, "alice@example.com", [address], mail)


async def test_a_token_revoked_here_is_refused_at_the_next_rcpt(
    tmp_path: Path, sink: SmtpSink
) -> None:
    settings = settings_for(tmp_path, sink, rcpt_cache_seconds=60)
    async with running(settings, app, http=False) as node:
        address, first = await _first_reply(node)
        assert first.rcpt_codes[0][0] == 250
        async with node.sessions() as session, session.begin():
            assert await tokens.revoke(session, address.split("+")[1].split("@")[0])
        second = await smtp_send(node.smtp_port, "alice@example.com", [address], b"x")
    code, text = second.rcpt_codes[0]
    assert code == 550 and "revoked" in text


async def test_a_token_revoked_elsewhere_meanwhile_ends_rejected_with_why(
    tmp_path: Path, sink: SmtpSink
) -> None:
    settings = settings_for(tmp_path, sink, rcpt_cache_seconds=60)
    async with running(settings, app, http=False) as node:
        address, first = await _first_reply(node)
        assert (await wait_for_status(node.sessions, first.inbound_id)).status == (
            InboundStatus.delivered
        )
        # As the CLI or another node would: straight in the database, nothing told here.
        token = address.split("+")[1].split("@")[0]
        async with node.sessions() as session, session.begin():
            await session.execute(
                update(ReplyToken)
                .where(ReplyToken.token_hash == tokens.hash_token(token))
                .values(revoked_at=utcnow() - timedelta(seconds=1))
            )
        second = await smtp_send(
            node.smtp_port, "alice@example.com", [address],
            build_mail("alice@example.com", address, "two"),
        )  # fmt: skip
        assert second.rcpt_codes[0][0] == 250  # remembered live: no query at this RCPT
        row = await wait_for_status(node.sessions, second.inbound_id)
    assert row.status is InboundStatus.rejected
    assert row.reason == "reply address is revoked"
