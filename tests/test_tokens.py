"""Reply tokens: entropy, case-folding, hashed storage, expiry and revocation."""

from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy import select, text

from mailbot.serve import Node
from mailbot.store import tokens
from mailbot.store.models import ReplyToken, utcnow
from mailbot.testing import make_thread


def test_token_carries_at_least_128_bits_in_a_case_free_alphabet() -> None:
    token = tokens.mint_token()
    alphabet = set("abcdefghijklmnopqrstuvwxyz234567")
    assert set(token) <= alphabet
    assert len(token) * math.log2(len(alphabet)) >= 128
    assert token == token.lower() == tokens.normalize_token(token.upper())


def test_tokens_do_not_repeat() -> None:
    assert len({tokens.mint_token() for _ in range(10_000)}) == 10_000


def test_reply_address_round_trips_through_an_upper_cased_local_part() -> None:
    token = tokens.mint_token()
    local = tokens.reply_address(token, "example.org").split("@")[0].upper()
    found = tokens.token_from_local_part(local)
    assert found is not None and tokens.normalize_token(found) == token


def test_other_local_parts_are_not_tokens() -> None:
    assert tokens.token_from_local_part("support") is None
    assert tokens.normalize_token("not-a-token") is None
    assert tokens.normalize_token("a" * 31) is None


async def test_only_the_hash_of_a_token_is_stored(node: Node) -> None:
    thread = await make_thread(node)
    token = thread.addresses["alice"].split("+", 1)[1].split("@")[0]
    async with node.sessions() as session:
        dump = " ".join(
            str(value)
            for row in (await session.execute(text("SELECT * FROM reply_tokens"))).all()
            for value in row
        )
        assert token not in dump
        assert tokens.hash_token(token) in dump


async def test_expired_and_revoked_tokens_are_reported_as_such(node: Node) -> None:
    thread = await make_thread(node)
    alice, bob = (
        a.split("+", 1)[1].split("@")[0]
        for a in (thread.addresses["alice"], thread.addresses["bob"])
    )
    async with node.sessions() as session, session.begin():
        assert (await tokens.check(session, alice.upper())).live
        row = await session.scalar(
            select(ReplyToken).where(ReplyToken.token_hash == tokens.hash_token(alice))
        )
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
        assert await tokens.revoke(session, bob)
    async with node.sessions() as session:
        assert (await tokens.check(session, alice)).problem == "expired"
        assert (await tokens.check(session, bob)).problem == "revoked"
        assert (await tokens.check(session, tokens.mint_token())).problem == "unknown"
        assert (await tokens.check(session, "garbage")).problem == "unknown"
