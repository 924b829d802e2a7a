"""The stages one stored message goes through, in order, and nothing else.

    analyse (parse + strip, in another process, outside any transaction)
      → classify → match → authorize → dispatch to the bot      (one transaction)

Each stage either adds to the row or refuses the message with a :class:`Rejection`; the
spool's :func:`~mailbot.spool.processing` turns the outcome into the stored status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot.analyse import Analysis
from mailbot.app import Mailbot
from mailbot.authorize import authorize
from mailbot.bot import Context, InboundMail
from mailbot.classify import classify
from mailbot.config import Settings
from mailbot.errors import Rejection
from mailbot.match import match
from mailbot.models import InboundMessage, InboundStatus


@dataclass(frozen=True)
class Deps:
    """What the pipeline needs from the running node."""

    settings: Settings
    app: Mailbot
    analyse: Callable[[bytes], Awaitable[Analysis]]  # parse + strip, off the event loop


async def run(session: AsyncSession, row: InboundMessage, analysis: Analysis, deps: Deps) -> None:
    """Everything after analysis, inside the row's one transaction."""
    parsed = analysis.parsed
    row.parsed = parsed.to_json()
    row.message_id = parsed.message_id or row.message_id
    row.reply_text = analysis.reply
    row.signature = analysis.signature
    row.quote = analysis.quote

    kind = classify(parsed, row.mail_from, deps.settings.domains)
    row.outcome = {"classification": kind.kind}
    if kind.automatic:
        raise Rejection(
            f"automatic mail, never acted on or answered: {kind.reason}", code=kind.kind
        )

    found = await match(session, deps.app, deps.settings.domains, row.rcpt_tos, parsed)
    row.conversation_id = found.conversation.id if found.conversation else None
    row.participant_id = found.participant.id if found.participant else None
    row.bot = found.bot
    authorize(found, parsed)

    if parsed.message_id:
        earlier = await session.scalar(
            select(InboundMessage.id).where(
                InboundMessage.message_id == parsed.message_id,
                InboundMessage.id != row.id,
                InboundMessage.status == InboundStatus.delivered,
                InboundMessage.bot == found.bot,
            )
        )
        if earlier is not None:
            raise Rejection(f"duplicate of message {earlier} (same Message-ID)", code="duplicate")

    bot_class = deps.app.bot(found.bot)
    if not analysis.reply and not getattr(bot_class, "accepts_empty", False):
        raise Rejection(
            "empty reply: nothing was left after removing the quoted text and signature",
            code="empty_reply",
        )

    mail = InboundMail(
        id=row.id,
        parsed=parsed,
        reply=analysis.reply,
        signature=analysis.signature,
        quote=analysis.quote,
        mail_from=row.mail_from,
        rcpt_tos=list(row.rcpt_tos),
        conversation=found.conversation,
        participant=found.participant,
    )
    ctx = Context(session, deps.settings)
    bot = bot_class(ctx)
    # A savepoint: a bot that bounces after writing leaves none of its writes behind, while
    # what the stages above stored on the row is kept with the bounce.
    async with session.begin_nested():
        await bot.before_process(mail)
        await bot.process(mail)
    row.outcome = {**row.outcome, "via": found.via, **ctx.outcome}
