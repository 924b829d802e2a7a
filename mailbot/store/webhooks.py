"""Webhook events, queued in the transaction that decides a message's fate.

One row per event per configured URL (mailbot/outbound/webhooks.py sends them): a message
reaching a final status (``message.delivered``, ``message.rejected``, ``message.bounced``,
``message.quarantined``) and each comment it posted (``comment.posted``). Queued with the
status itself, an event is never lost and never tells of a change that rolled back.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot.config import Settings
from mailbot.status import FINAL_INBOUND
from mailbot.store.models import Comment, InboundMessage, WebhookDelivery


async def queue_events(session: AsyncSession, settings: Settings, row: InboundMessage) -> None:
    """Queue this message's events for every webhook URL; nothing when none is set."""
    if not settings.webhook_urls or row.status not in FINAL_INBOUND:
        return
    events = [(f"message.{row.status.value}", {"inbound_id": row.id})]
    await session.flush()  # the bot's comments, so they can be found
    comments = await session.scalars(select(Comment.id).where(Comment.inbound_id == row.id))
    events += [("comment.posted", {"inbound_id": row.id, "comment_id": c}) for c in comments]
    for url in settings.webhook_urls:
        for event, payload in events:
            session.add(WebhookDelivery(event=event, url=url, inbound_id=row.id, payload=payload))
