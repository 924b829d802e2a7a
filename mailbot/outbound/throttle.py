"""May we send to this address now? The outbox's last line of defence against mail loops.

:mod:`mailbot.pipeline.classify` keeps automatic mail from ever being answered, but a loop can still
get through (an auto-responder that sets none of the usual headers, a misconfigured bot).
Whatever gets through meets this: a participant suspended after a hard bounce gets nothing,
and no address gets more than ``max_sends_per_address_per_hour`` mails from us in an hour.
A mail refused here is still stored, ``suppressed`` with the reason, so nothing vanishes silently.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot.config import Settings
from mailbot.store.models import OutboundMessage, OutboundStatus, Participant, utcnow

WINDOW = timedelta(hours=1)


# Built once (it runs for every notification), and matching ix_outbound_recipient_lower.
_SENT_SINCE = select(func.count(OutboundMessage.id)).where(
    func.lower(OutboundMessage.recipient) == bindparam("recipient"),
    OutboundMessage.created_at >= bindparam("since"),
    OutboundMessage.status.not_in([OutboundStatus.failed, OutboundStatus.suppressed]),
)


UNSUBSCRIBED = "the participant unsubscribed from this conversation"


def suspended(participant: Participant) -> str:
    """Why nothing goes to a participant suspended after a hard bounce."""
    why = participant.bounce_reason or "no reason given"
    return f"not sent: {participant.email} is suspended after a hard bounce ({why})"


async def refusal(
    session: AsyncSession, settings: Settings, recipient: str, participant: Participant | None
) -> str | None:
    """Why a mail to ``recipient`` must not be sent now, or None to send it."""
    if participant is not None and participant.bounced_at is not None:
        return suspended(participant)
    limit = settings.max_sends_per_address_per_hour
    if limit <= 0:
        return None
    sent = await session.scalar(
        _SENT_SINCE, {"recipient": recipient.lower(), "since": utcnow() - WINDOW}
    )
    if (sent or 0) >= limit:
        return (
            f"not sent: {limit} mails to {recipient} in the last hour already "
            "(the per-address limit that stops mail loops)"
        )
    return None
