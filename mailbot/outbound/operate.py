"""What an operator may do to one outbound mail: cancel it, or try it again.

The CLI (``mailbot outbox cancel|retry ID``) and the API (``POST /api/outbox/{id}/cancel|retry``)
call these. Each takes the row under a lock, so it never races the sender's lease: a mail
being sent right now (``sending`` under a live lease) is neither cancelled nor retried; once
its lease ran out (its node died), it may be. A sender that lost its lease records a retry
or a give-up only where the row is still its own, so it never undoes an operator.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import undefer

from mailbot.config import Settings
from mailbot.outbound.record import FINAL, scrubbed
from mailbot.redact import MARK
from mailbot.store import tokens
from mailbot.store.db import Sessions
from mailbot.store.models import OutboundMessage, OutboundStatus, Participant, utcnow

CANCELLED = "cancelled by an operator"
RETRIED = "retried by an operator"


async def cancel(sessions: Sessions, outbound_id: int) -> OutboundMessage:
    """A mail not sent yet (held, queued, deferred) becomes ``failed`` ("cancelled by an
    operator"), scrubbed like every final row. The row as it then is; :class:`LookupError`
    for an unknown id, :class:`ValueError` for a mail that is final already or being sent
    (a server may be taking it this moment: if it does, ``sent`` is what is recorded)."""
    async with sessions() as session, session.begin():
        row = await _locked(session, outbound_id)
        if row.status in FINAL or _being_sent(row):
            raise ValueError(f"outbound message {outbound_id} is {row.status.value} already")
        for name, value in scrubbed(row).items():
            setattr(row, name, value)
        row.status, row.reason = OutboundStatus.failed, CANCELLED
    return row


async def retry(sessions: Sessions, settings: Settings, outbound_id: int) -> OutboundMessage:
    """Try a mail again now, with a new delivery lifetime: a ``deferred`` or ``held`` one
    at once, a ``failed`` or ``suppressed`` one as if it were new.

    A failed mail's reply address was scrubbed when it failed; the recipient gets a fresh one,
    so that answering it works. Retrying the mail that suspended a participant (a hard bounce)
    lifts the suspension: the operator says the address works again. A mail that was never
    composed (``raw`` empty), one already ``sent`` or one being sent: :class:`ValueError`."""
    async with sessions() as session, session.begin():
        row = await _locked(session, outbound_id)
        if row.status is OutboundStatus.sent or _being_sent(row):
            raise ValueError(f"outbound message {outbound_id} is {row.status.value}")
        if not row.raw:
            raise ValueError(f"outbound message {outbound_id} was never composed: {row.reason}")
        person = await session.get(Participant, row.participant_id) if row.participant_id else None
        if row.reply_to and f"+{MARK}" in row.reply_to:
            if person is None:
                raise ValueError(f"outbound message {outbound_id} has no participant to reply")
            await _fresh_reply_address(session, settings, row, person)
        if person is not None and person.bounced_at is not None:
            person.bounced_at, person.bounce_reason = None, None
        row.status = OutboundStatus.queued if settings.sends else OutboundStatus.held
        row.reason, row.next_attempt_at, row.attempts = RETRIED, None, 0
        row.expires_at = utcnow() + timedelta(hours=settings.delivery_lifetime_hours)
    return row


async def _fresh_reply_address(
    session: AsyncSession, settings: Settings, row: OutboundMessage, person: Participant
) -> None:
    assert row.reply_to
    token = await tokens.issue(session, person, timedelta(days=settings.token_ttl_days))
    fresh = tokens.reply_address(token, settings.domain)
    # The scrubbed address (mailbot/redact.py) is the same in every place it was written.
    row.raw = row.raw.replace(row.reply_to.encode(), fresh.encode())
    row.reply_to = fresh


def _being_sent(row: OutboundMessage) -> bool:
    """``sending`` under a live lease; once the lease ran out, its sender is gone."""
    lease = row.next_attempt_at
    return row.status is OutboundStatus.sending and lease is not None and lease > utcnow()


async def _locked(session: AsyncSession, outbound_id: int) -> OutboundMessage:
    row = await session.scalar(
        select(OutboundMessage)
        .where(OutboundMessage.id == outbound_id)
        .with_for_update()
        .options(undefer(OutboundMessage.raw))
    )
    if row is None:
        raise LookupError(f"there is no outbound message {outbound_id}")
    return row
