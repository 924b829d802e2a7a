"""What we sent the person who replies: the mails their quote is cut against.

A reply through a reply address quotes a mail we sent that participant (mailbot/strip/sent.py
finds it). Looked up in phase 1, beside the analysis, with the reader sessions: the beginning
of the last few mails sent to the participant the address names, newest first. A reply to
anything else (a route, a fixed address) has none, and the rules alone cut it; so does a
reply whose lookup failed (the database busy or away): a lookup never fails a message.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot import addresses, recipients
from mailbot.app import Mailbot
from mailbot.store.db import Sessions
from mailbot.store.models import OutboundMessage, OutboundStatus

log = logging.getLogger(__name__)

MAX_SENT = 3  # a person answers one of the last few mails they got from us
# Of each, the beginning only: the text part comes first in what we compose, and a mail
# with big attachments is never copied whole into the node's main process for this.
SENT_BYTES = 256 * 1024


async def sent_to_replier(
    sessions: Sessions, app: Mailbot, domains: frozenset[str], rcpt_tos: list[str]
) -> list[bytes]:
    """The raw mails last sent to the participant whose reply address is a recipient."""
    tokens = [r for r in rcpt_tos if addresses.token_from_local_part(addresses.split(r)[0])]
    if not tokens:
        return []
    try:
        return await _sent(sessions, app, domains, tokens)
    except Exception as exc:  # noqa: BLE001 - without them the rules cut; never a failure
        log.warning("the mails sent to a replier could not be read: %s", type(exc).__name__)
        return []


async def _sent(
    sessions: Sessions, app: Mailbot, domains: frozenset[str], rcpt_tos: list[str]
) -> list[bytes]:
    directory = recipients.Directory.of(app, domains)
    async with sessions() as session:
        for rcpt in rcpt_tos:
            found = await recipients.lookup(rcpt, directory, lambda: nullcontext(session))
            if found.kind != "token" or found.participant is None:
                continue
            return await sent_to(session, found.participant.id)
    return []


async def sent_to(
    session: AsyncSession, participant_id: int, before: datetime | None = None
) -> list[bytes]:
    """The beginnings of the last mails sent to a participant (before a time: what a stored
    reply was cut against, for ``mailbot strip-case``), newest first."""
    query = (
        select(func.substr(OutboundMessage.raw, 1, SENT_BYTES))
        .where(
            OutboundMessage.participant_id == participant_id,
            # sending: a server took it a moment ago, not yet recorded
            OutboundMessage.status.in_([OutboundStatus.sent, OutboundStatus.sending]),
        )
        .order_by(OutboundMessage.id.desc())
        .limit(MAX_SENT)
    )
    if before is not None:
        query = query.where(OutboundMessage.created_at <= before)
    return [bytes(raw) for raw in await session.scalars(query) if raw]
