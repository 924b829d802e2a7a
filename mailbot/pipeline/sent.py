"""What we sent the person who replies: the mails their quote is cut against.

A reply through a reply address quotes a mail we sent that participant (mailbot/strip/sent.py
finds it). Looked up in phase 1 with the message itself (mailbot/pipeline/stages.py ``load``,
one read-only connection): the beginning of the last few mails sent to the participant the
address names, newest first. A reply to anything else (a route, a fixed address) has none,
and the rules alone cut it; so does a reply whose lookup failed (the database busy or away):
a lookup never fails a message.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot import addresses
from mailbot.store import tokens
from mailbot.store.db import OpenReader
from mailbot.store.models import OutboundMessage, OutboundStatus, ReplyToken

log = logging.getLogger(__name__)

MAX_SENT = 3  # a person answers one of the last few mails they got from us
# Of each, the beginning only: the text part comes first in what we compose, and a mail
# with big attachments is never copied whole into the node's main process for this.
SENT_BYTES = 256 * 1024


async def sent_to_replier(
    sessions: OpenReader, domains: frozenset[str], rcpt_tos: list[str]
) -> list[bytes]:
    """The raw mails last sent to the participant whose reply address is a recipient."""
    hashes = []
    for rcpt in rcpt_tos:
        local, domain = addresses.split(rcpt)
        token = addresses.token_from_local_part(local) if domain in domains else None
        known = tokens.normalize_token(token) if token is not None else None
        if known is not None:
            hashes.append(tokens.hash_token(known))
    if not hashes:
        return []
    try:
        async with sessions() as reads:
            for token_hash in hashes:
                found = await reads.scalars(_BY_TOKEN, {"token_hash": token_hash})
                if kept := [bytes(raw) for raw in found if raw]:
                    return kept
    except Exception as exc:  # noqa: BLE001 - without them the rules cut; never a failure
        log.warning("the mails sent to a replier could not be read: %s", type(exc).__name__)
    return []


def _recent(participant: ColumnElement[int] | int) -> Select[tuple[Any]]:
    return (
        select(func.substr(OutboundMessage.raw, 1, SENT_BYTES))
        .where(
            OutboundMessage.participant_id == participant,
            # sending: a server took it a moment ago, not yet recorded
            OutboundMessage.status.in_([OutboundStatus.sent, OutboundStatus.sending]),
        )
        .order_by(OutboundMessage.id.desc())
        .limit(MAX_SENT)
    )


# One statement, built once (this runs for every reply): the token names the participant.
# Whether the token is still live is phase 2's question; this only picks what to cut against.
_BY_TOKEN = _recent(
    select(ReplyToken.participant_id)
    .where(ReplyToken.token_hash == bindparam("token_hash"))
    .scalar_subquery()
)


async def sent_to(
    session: AsyncSession, participant_id: int, before: datetime | None = None
) -> list[bytes]:
    """The beginnings of the last mails sent to a participant (before a time: what a stored
    reply was cut against, for ``mailbot strip-case``), newest first."""
    query = _recent(participant_id)
    if before is not None:
        query = query.where(OutboundMessage.created_at <= before)
    return [bytes(raw) for raw in await session.scalars(query) if raw]
