"""The same message delivered twice acts once.

Senders retry: an MTA that lost our ``250`` in a dropped connection sends the message again,
and a person may press send twice. Both copies are stored (each got its ``250``), and the
second is refused here as a duplicate, with the first one's id in the reason.

A copy is a duplicate of another row with the same Message-ID when that row

- was already delivered to the same bot, or
- is older and still in flight (``pending`` or ``processing``) for the same recipients: two
  copies processed at the same moment by different workers cannot both see the other
  delivered, so the older one wins and the newer one steps aside. Should the older one
  then fail for a reason that passes, it is retried and still acts once.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot.status import IN_FLIGHT_INBOUND
from mailbot.store.models import InboundMessage, InboundStatus


def _recipients(rcpt_tos: list[str]) -> list[str]:
    return sorted(r.strip("<>").lower() for r in rcpt_tos)


async def earlier_copy(
    session: AsyncSession, row: InboundMessage, message_id: str | None, bot: str
) -> int | None:
    """The id of the copy this row duplicates, or None when this row should act."""
    if not message_id:
        return None
    others = (
        await session.execute(
            select(
                InboundMessage.id,
                InboundMessage.status,
                InboundMessage.bot,
                InboundMessage.rcpt_tos,
            )
            .where(InboundMessage.message_id == message_id, InboundMessage.id != row.id)
            .order_by(InboundMessage.id)
        )
    ).all()
    mine = _recipients(list(row.rcpt_tos))
    for other in others:
        if other.status == InboundStatus.delivered and other.bot == bot:
            return int(other.id)
        if (
            other.id < row.id
            and other.status in IN_FLIGHT_INBOUND
            and _recipients(list(other.rcpt_tos)) == mine
        ):
            return int(other.id)
    return None
