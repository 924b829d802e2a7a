"""Temporary addresses: ``<token>@<subdomain>.<domain>``, each a conversation of the bot that
owns the subdomain (the inspector: ``inspect.``), alive until its token expires.

The address is a reply token under another name, so everything a token has comes with it:
stored as its SHA-256 only, case-folding safe, redacted wherever it is shown but the one
answer that makes it; RCPT refuses it (550) once it has expired or was revoked. Its one
participant is a placeholder: mail to a temporary address is from anyone (the bot's
``sender_policy`` is "open") and nothing is ever sent to it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from mailbot.store import conversations, tokens
from mailbot.store.models import utcnow

PLACEHOLDER = "temporary-address@example.com"  # the participant a token needs; never mailed


@dataclass(frozen=True)
class Temporary:
    address: str
    key: str  # its conversation's key: the inbox filter conversation:<key> shows its mail
    expires_at: datetime


async def make(
    session: AsyncSession, *, bot: str, subdomain: str, domain: str, ttl: timedelta
) -> Temporary:
    """A new temporary address for ``bot``; the caller commits."""
    key = f"{subdomain}-{secrets.token_hex(6)}"
    convo = await conversations.ensure(
        session, key, domain, subject=f"temporary address ({bot})", bot=bot
    )
    holder = await conversations.ensure_participant(session, convo, PLACEHOLDER, "temporary")
    token = await tokens.issue(session, holder, ttl)
    return Temporary(f"{token}@{subdomain}.{domain}", key, utcnow() + ttl)
