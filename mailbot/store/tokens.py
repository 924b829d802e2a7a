"""Reply tokens: the secret in ``reply+<token>@<domain>``.

A token is 160 random bits written in lower-case RFC 4648 base32 (``a-z2-7``, 32 characters):
the alphabet has no case to lose, so a sender that upper-cases the local part (some do)
still reaches the right conversation. Only the SHA-256 of a token is stored; a token is bound
to one participant of one conversation and has an expiry and a revocation time.

>>> token = mint_token()
>>> len(token), token == token.lower()
(32, True)
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

# The address grammar lives in mailbot.addresses; these names stay importable from here.
from mailbot.addresses import reply_address as reply_address
from mailbot.addresses import token_from_local_part as token_from_local_part
from mailbot.store import live_tokens
from mailbot.store.models import Participant, ReplyToken, utcnow

TOKEN_BYTES = 20  # 160 bits
_TOKEN_RE = re.compile(r"^[a-z2-7]{32}$")


def mint_token() -> str:
    return base64.b32encode(secrets.token_bytes(TOKEN_BYTES)).decode("ascii").lower()


def normalize_token(token: str) -> str | None:
    """The canonical form of a token as found in an address, or None if it cannot be one."""
    token = token.strip().lower()
    return token if _TOKEN_RE.match(token) else None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class TokenCheck:
    """What a token lookup found: a live participant, or why not."""

    participant: Participant | None
    problem: str | None  # None when live; else "unknown", "expired" or "revoked"
    expires_at: datetime | None = None

    @property
    def live(self) -> bool:
        return self.participant is not None and self.problem is None


async def issue(session: AsyncSession, participant: Participant, ttl: timedelta) -> str:
    """A new token for ``participant``; the caller commits."""
    token = mint_token()
    session.add(
        ReplyToken(
            token_hash=hash_token(token),
            participant_id=participant.id,
            expires_at=utcnow() + ttl,
        )
    )
    return token


# Built once: this runs at every RCPT and again for every reply, and building a statement
# (and its cache key) costs more than running it. One query, with joins.
_BY_HASH = (
    select(ReplyToken)
    .where(ReplyToken.token_hash == bindparam("token_hash"))
    .options(joinedload(ReplyToken.participant).joinedload(Participant.conversation))
)


async def check(session: AsyncSession, raw_token: str, now: datetime | None = None) -> TokenCheck:
    token = normalize_token(raw_token)
    if token is None:
        return TokenCheck(None, "unknown")
    row = await session.scalar(_BY_HASH, {"token_hash": hash_token(token)})
    if row is None:
        return TokenCheck(None, "unknown")
    if row.revoked_at is not None:
        return TokenCheck(row.participant, "revoked")
    if row.expires_at <= (now or utcnow()):
        return TokenCheck(row.participant, "expired")
    return TokenCheck(row.participant, None, row.expires_at)


async def revoke(session: AsyncSession, raw_token: str) -> bool:
    """Revoke one token; True if it existed. The caller commits."""
    token = normalize_token(raw_token)
    if token is None:
        return False
    token_hash = hash_token(token)
    result = await session.execute(
        update(ReplyToken)
        .where(ReplyToken.token_hash == token_hash, ReplyToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    live_tokens.forget(token_hash)
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def revoke_id(session: AsyncSession, token_id: int) -> bool | None:
    """Revoke the token with this row id; None if there is none, False if it was revoked
    already. The caller commits."""
    token = await session.get(ReplyToken, token_id)
    if token is None:
        return None
    if token.revoked_at is not None:
        return False
    token.revoked_at = utcnow()
    live_tokens.forget(token.token_hash)
    return True
