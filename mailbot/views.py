"""JSON views of stored records, one shape shared by the CLI (``--json``) and the HTTP API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot.models import Conversation, InboundMessage, InboundStatus, OutboundMessage

_IN_FLIGHT = frozenset({InboundStatus.pending, InboundStatus.processing})


def inbound_json(row: InboundMessage, conversation_key: str | None) -> dict[str, Any]:
    parsed = row.parsed or {}
    return {
        "id": row.id,
        "status": row.status.value,
        "reason": row.reason,
        "received_at": row.received_at.isoformat(),
        "envelope": {
            "mail_from": row.mail_from,
            "rcpt_tos": row.rcpt_tos,
            "client_ip": row.client_ip,
            "helo": row.helo,
            "tls": row.tls,
            "auth_user": row.auth_user,
            "size": row.size,
        },
        "message_id": row.message_id,
        "from": parsed.get("from", []),
        "subject": parsed.get("subject"),
        "reply_text": row.reply_text,
        "signature": row.signature,
        "quote": row.quote,
        "conversation": conversation_key,
        "bot": row.bot,
        "outcome": row.outcome,
        # spamd's verdict, or why there is none ("not scanned: ..."), said either way.
        "spam": row.spam if row.spam is not None else _not_scanned(row.status),
        # SPF, DKIM, DMARC and the Authentication-Results header (mailbot/authenticate.py).
        "authentication": row.authentication,
        "attempts": row.attempts,
    }


async def inbox(
    session: AsyncSession, *, status: InboundStatus | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    query = (
        select(InboundMessage, Conversation.key)
        .outerjoin(Conversation, Conversation.id == InboundMessage.conversation_id)
        .order_by(InboundMessage.id.desc())
        .limit(limit)
    )
    if status is not None:
        query = query.where(InboundMessage.status == status)
    rows = (await session.execute(query)).all()
    return [inbound_json(row, key) for row, key in rows]


async def inbound_one(session: AsyncSession, inbound_id: int) -> dict[str, Any] | None:
    found = (
        await session.execute(
            select(InboundMessage, Conversation.key)
            .outerjoin(Conversation, Conversation.id == InboundMessage.conversation_id)
            .where(InboundMessage.id == inbound_id)
        )
    ).first()
    if found is None:
        return None
    row, key = found
    data = inbound_json(row, key)
    data["parsed"] = row.parsed
    return data


def _not_scanned(status: InboundStatus) -> dict[str, Any]:
    # Refused before the spam stage (automatic mail), or not processed yet.
    reason = "not scanned yet" if status in _IN_FLIGHT else "not scanned"
    return {"scanned": False, "reason": reason}


def outbound_json(row: OutboundMessage) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status.value,
        "reason": row.reason,
        "message_id": row.message_id,
        "mail_from": row.mail_from,
        "recipient": row.recipient,
        "kind": row.kind,
        "reply_to": row.reply_to,
        "subject": row.subject,
        "attempts": row.attempts,
        "inbound_id": row.inbound_id,
        "created_at": row.created_at.isoformat(),
        "sent_at": row.sent_at.isoformat() if row.sent_at else None,
    }


async def outbox(session: AsyncSession, limit: int = 100) -> list[dict[str, Any]]:
    rows = await session.scalars(
        select(OutboundMessage).order_by(OutboundMessage.id.desc()).limit(limit)
    )
    return [outbound_json(row) for row in rows]
