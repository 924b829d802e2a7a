"""Credentials for the HTTP side: made by ``mailbot api-token create NAME``, shown once,
stored as their SHA-256 (a stolen database holds no usable token), revoked by name."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot.store.models import ApiToken, utcnow

PREFIX = "mbt_"  # says what it is when found in a file or a log
TOUCH_EVERY = timedelta(minutes=5)  # last_used_at is written at most this often


def hash_of(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


async def create(session: AsyncSession, name: str) -> str:
    """A new token named ``name`` (unique); the caller commits and shows it once."""
    token = PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, token_hash=hash_of(token)))
    await session.flush()
    return token


async def valid(session: AsyncSession, token: str) -> bool:
    """Whether ``token`` is a live stored token; notes when it was last used."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return False
    found = await session.scalar(
        select(ApiToken).where(ApiToken.token_hash == hash_of(token), ApiToken.revoked_at.is_(None))
    )
    if found is None:
        return False
    now = utcnow()
    if found.last_used_at is None or now - found.last_used_at > TOUCH_EVERY:
        found.last_used_at = now
    return True


async def live_count(session: AsyncSession) -> int:
    """How many tokens are not revoked."""
    found = await session.scalar(
        select(func.count()).select_from(ApiToken).where(ApiToken.revoked_at.is_(None))
    )
    return int(found or 0)


async def revoke(session: AsyncSession, name: str) -> bool:
    result = await session.execute(
        update(ApiToken)
        .where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def listed(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.scalars(select(ApiToken).order_by(ApiToken.id))
    return [
        {
            "name": t.name,
            "created_at": t.created_at.isoformat(),
            "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
            "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
        }
        for t in rows
    ]
