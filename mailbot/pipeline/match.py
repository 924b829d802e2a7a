"""Which conversation and participant a mail belongs to, and which bot handles it.

1. A reply address among the recipients: its token names the participant (and so the
   conversation, and the conversation names its bot).
2. An address in the routing table (``support@``): that route's bot; and if the mail answers
   one we sent (In-Reply-To/References), the conversation and participant of that mail.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot import recipients
from mailbot.errors import Rejection
from mailbot.status import RefusalCode
from mailbot.store import conversations
from mailbot.store.models import Conversation, OutboundMessage, Participant

if TYPE_CHECKING:
    from mailbot.app import Mailbot
    from mailbot.parse import ParsedMail


@dataclass(frozen=True)
class Match:
    bot: str
    via: str  # "token", "references" or "route"
    conversation: Conversation | None = None
    participant: Participant | None = None


async def match(
    session: AsyncSession,
    app: Mailbot,
    domains: frozenset[str],
    rcpt_tos: list[str],
    parsed: ParsedMail,
) -> Match:
    directory = recipients.Directory.of(app, domains)
    route_bot: str | None = None
    for rcpt in rcpt_tos:
        found = await recipients.lookup(rcpt, directory, lambda: nullcontext(session))
        if found.kind == "token":
            if found.why is None and found.participant is not None:
                convo = await conversations.for_reply(session, found.participant.conversation)
                return Match(convo.bot, "token", convo, found.participant)
            # Live at RCPT time, dead now (revoked or expired while queued): say so.
            why = found.why or recipients.Why.TOKEN_UNKNOWN
            raise Rejection(
                f"reply address is {why.removeprefix('token_')}", code=RefusalCode(why.value)
            )
        if found.kind == "route" and route_bot is None:
            route_bot = found.bot
    if route_bot is None:
        raise Rejection(
            "no recipient is a live reply address or a known route", code=RefusalCode.no_route
        )
    thread = await by_references(session, parsed)
    if thread is not None:
        return Match(route_bot, "references", *thread)
    return Match(route_bot, "route")


async def by_references(
    session: AsyncSession, parsed: ParsedMail
) -> tuple[Conversation, Participant] | None:
    """The conversation of the newest mail we sent that this one answers, if any."""
    ids = [i for i in [parsed.in_reply_to, *reversed(parsed.references)] if i]
    if not ids:
        return None
    sent = await session.scalar(
        select(OutboundMessage)
        .where(OutboundMessage.message_id.in_(ids), OutboundMessage.participant_id.is_not(None))
        .order_by(OutboundMessage.id.desc())
        .limit(1)
    )
    if sent is None or sent.conversation_id is None:
        return None
    participant = await session.get(Participant, sent.participant_id)
    convo = await session.get(Conversation, sent.conversation_id)
    if participant is None or convo is None:
        return None
    return await conversations.for_reply(session, convo), participant
