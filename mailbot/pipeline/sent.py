"""What we sent the person who replies: the mails their quote is cut against.

A reply through a reply address quotes a mail we sent that participant (mailbot/strip/sent.py
finds it). Looked up in phase 1, beside the analysis, with the reader sessions: the last few
mails sent to the participant the address names, whatever conversation, newest first. A
reply to anything else (a route, a fixed address) has none, and the rules alone cut it.
"""

from __future__ import annotations

from contextlib import nullcontext

from sqlalchemy import select

from mailbot import recipients
from mailbot.app import Mailbot
from mailbot.store.db import Sessions
from mailbot.store.models import OutboundMessage, OutboundStatus

MAX_SENT = 3  # a person answers one of the last few mails they got from us


async def sent_to_replier(
    sessions: Sessions, app: Mailbot, domains: frozenset[str], rcpt_tos: list[str]
) -> list[bytes]:
    """The raw mails last sent to the participant whose reply address is a recipient."""
    directory = recipients.Directory.of(app, domains)
    async with sessions() as session:
        for rcpt in rcpt_tos:
            found = await recipients.lookup(rcpt, directory, lambda: nullcontext(session))
            if found.kind != "token" or found.participant is None:
                continue
            raws = await session.scalars(
                select(OutboundMessage.raw)
                .where(
                    OutboundMessage.participant_id == found.participant.id,
                    # sending: a server took it a moment ago, not yet recorded
                    OutboundMessage.status.in_([OutboundStatus.sent, OutboundStatus.sending]),
                )
                .order_by(OutboundMessage.id.desc())
                .limit(MAX_SENT)
            )
            return [raw for raw in raws if raw]
    return []
