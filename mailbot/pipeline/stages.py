"""The stages one stored message goes through, in order, and nothing else.

    analyse (parse + strip, in another process), spam scan (spamd) and authenticate (SPF,
    DKIM, DMARC), outside any transaction
      → classify (bounce? → record it) → scanned? → match → quarantine? → authorize
      → duplicate? → dispatch  (one transaction)

Each stage either adds to the row or refuses the message with a :class:`Rejection`; the
spool's :func:`~mailbot.store.spool.processing` turns the outcome into the stored status, and
:mod:`mailbot.outbound.notices` decides whether the sender is told why.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot.app import Mailbot
from mailbot.bot import Context, InboundMail
from mailbot.config import Settings
from mailbot.errors import Rejection
from mailbot.outbound import bounces, notices
from mailbot.pipeline import duplicates
from mailbot.pipeline.analyse import Analysis
from mailbot.pipeline.classify import classify
from mailbot.pipeline.match import match
from mailbot.spam import policy as spam_policy
from mailbot.spam.client import SpamChecker
from mailbot.status import RefusalCode
from mailbot.store.models import InboundMessage
from mailbot.trust.authenticate import Authentication, annotate
from mailbot.trust.authorize import authorize


@dataclass(frozen=True)
class Deps:
    """What the pipeline needs from the running node."""

    settings: Settings
    app: Mailbot
    analyse: Callable[[bytes], Coroutine[Any, Any, Analysis]]  # parse + strip, off the loop
    spam: SpamChecker | None = None  # None: spam scanning is off


async def run(session: AsyncSession, row: InboundMessage, analysis: Analysis, deps: Deps) -> None:
    """Everything after analysis, inside the row's one transaction. A refusal may also tell
    its sender why, when that is safe (mailbot/outbound/notices.py); the notice commits with it."""
    try:
        await _stages(session, row, analysis, deps)
    except Rejection as refusal:
        if not refusal.final:
            raise  # unscanned: scanned and decided again later, told nothing yet
        notice = await notices.consider(session, deps.settings, row, analysis.parsed, refusal)
        row.outcome = {**(row.outcome or {}), "notice": notice}
        raise


async def _stages(
    session: AsyncSession, row: InboundMessage, analysis: Analysis, deps: Deps
) -> None:
    parsed = analysis.parsed
    # SPF/DKIM/DMARC were stored on the row before this transaction (mailbot/pipeline/worker.py).
    row.parsed = annotate(parsed.to_json(), row.authentication, deps.settings.hostname)
    auth = Authentication.from_json(row.authentication) if row.authentication else None
    row.message_id = parsed.message_id or row.message_id
    row.reply_text = analysis.reply
    row.signature = analysis.signature
    row.quote = analysis.quote

    kind = classify(parsed, row.mail_from, deps.settings.domains)
    row.outcome = {"classification": kind.kind}
    if kind.kind == "bounce":
        raw = await session.scalar(select(InboundMessage.raw).where(InboundMessage.id == row.id))
        report = await bounces.record(
            session, raw or b"", list(row.rcpt_tos), deps.settings.domains
        )
        row.outcome = {**row.outcome, "bounce": report}
        raise Rejection(f"{kind.reason}: {bounces.summary(report)}", code=RefusalCode.bounce)
    if kind.automatic:
        raise Rejection(
            f"automatic mail, never acted on or answered: {kind.reason}",
            code=RefusalCode(kind.kind),
        )
    # The verdict was stored before this transaction (at DATA time or by the worker).
    spam_policy.require_scan(row, scanning=deps.spam is not None)

    found = await match(session, deps.app, deps.settings.domains, row.rcpt_tos, parsed)
    row.conversation_id = found.conversation.id if found.conversation else None
    row.participant_id = found.participant.id if found.participant else None
    row.bot = found.bot
    spam_policy.apply(row, deps.settings, deps.app.bots.get(found.bot))
    bot_class = deps.app.bot(found.bot)
    # A trusted submitter (SMTP AUTH) is known without DNS; the owner check still applies.
    proof = None if row.auth_user else auth
    authorize(found, parsed, proof, bot_class.sender_policy, deps.settings)

    earlier = await duplicates.earlier_copy(session, row, parsed.message_id, found.bot)
    if earlier is not None:
        raise Rejection(
            f"duplicate of message {earlier} (same Message-ID)", code=RefusalCode.duplicate
        )

    if not analysis.reply and not getattr(bot_class, "accepts_empty", False):
        raise Rejection(
            "empty reply: nothing was left after removing the quoted text and signature",
            code=RefusalCode.empty_reply,
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
