"""JSON views of stored records, one shape shared by the CLI (``--json``) and the HTTP API.

Every view is redacted here (:mod:`mailbot.redact`): no reply token or VERP id leaves this
module, whichever field or header it hides in. The one exception is asked for by name:
``outbound_json(row, reveal_reply_to=True)``, for the command that just minted the address.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer
from sqlalchemy.sql.elements import ColumnElement

from mailbot.addresses import split
from mailbot.redact import MARK, fingerprint, redact
from mailbot.status import IN_FLIGHT_INBOUND
from mailbot.store import attachments as stored_attachments
from mailbot.store import conversations
from mailbot.store.models import (
    Comment,
    Conversation,
    InboundAttachment,
    InboundMessage,
    InboundStatus,
    OutboundMessage,
    OutboundStatus,
    Participant,
    ReplyToken,
    WebhookDelivery,
    utcnow,
)


def inbound_json(
    row: InboundMessage, conversation_key: str | None, parsed: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One message as lists show it; ``parsed``: its From and Subject when the row was read
    without its parsed JSON (:func:`listing`), else the row's own."""
    parsed = parsed if parsed is not None else (row.parsed or {})
    return _redacted(
        {
            "id": row.id,
            "status": row.status.value,
            "reason": row.reason,
            "received_at": row.received_at.isoformat(),
            "updated_at": row.updated_at.isoformat(),
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
            # SPF, DKIM, DMARC and the Authentication-Results header (mailbot/trust/).
            "authentication": row.authentication,
            "attempts": row.attempts,
            "raw": _raw_json(row),
        }
    )


def _raw_json(row: InboundMessage) -> dict[str, Any]:
    """Where the raw message is kept, or that retention removed it (mailbot/store/retention.py)."""
    if row.purged_at is not None:
        return {
            "kept": None,
            "removed": "raw removed by retention",
            "at": row.purged_at.isoformat(),
        }
    return {"kept": "blob store" if row.raw_blob else "database"}


def attachment_json(row: InboundAttachment) -> dict[str, Any]:
    """One attachment: what it is, and where to fetch it (mailbot/web/api.py)."""
    data: dict[str, Any] = {
        "n": row.position,
        "filename": row.filename,
        "content_type": row.content_type,
        "size": row.size,
        "sha256": row.sha256,
        "url": f"/api/inbound/{row.inbound_id}/attachments/{row.position}",
    }
    if row.blob_key is None:
        data["removed"] = "removed by retention"
    return _redacted(data)


async def attachments(session: AsyncSession, inbound_id: int) -> list[dict[str, Any]] | None:
    """A message's attachments, in order; None when there is no such message."""
    found = await session.scalar(select(InboundMessage.id).where(InboundMessage.id == inbound_id))
    if found is None:
        return None
    return [attachment_json(a) for a in await stored_attachments.listed(session, inbound_id)]


def listing() -> Select[Any]:
    """Rows for a list, without their parsed JSON (the bodies, up to megabytes each): only
    the From and Subject a list shows, read from it by the database."""
    return (
        select(
            InboundMessage,
            Conversation.key,
            InboundMessage.parsed["from"].label("parsed_from"),
            InboundMessage.parsed["subject"].label("parsed_subject"),
        )
        .outerjoin(Conversation, Conversation.id == InboundMessage.conversation_id)
        .options(defer(InboundMessage.parsed))
    )


def listed_json(rows: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        inbound_json(row, key, {"from": sender or [], "subject": subject})
        for row, key, sender, subject in rows
    ]


async def inbox(
    session: AsyncSession,
    *,
    status: InboundStatus | None = None,
    limit: int = 100,
    where: ColumnElement[bool] | None = None,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """The newest messages first; ``where`` from :mod:`mailbot.web.search`, ``before_id`` to
    page on."""
    query = listing().order_by(InboundMessage.id.desc()).limit(limit)
    if status is not None:
        query = query.where(InboundMessage.status == status)
    if where is not None:
        query = query.where(where)
    if before_id is not None:
        query = query.where(InboundMessage.id < before_id)
    return listed_json((await session.execute(query)).all())


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
    data["parsed"] = redact(row.parsed)
    data["attachments"] = [
        attachment_json(a) for a in await stored_attachments.listed(session, inbound_id)
    ]
    return data


async def timeline(session: AsyncSession, inbound_id: int) -> dict[str, Any] | None:
    """What happened to one message, in order: received and stored, each stage of the
    pipeline as it recorded itself (mailbot/pipeline/stages.py), its final status, and
    each mail sent because of it."""
    row = await session.get(InboundMessage, inbound_id)
    if row is None:
        return None
    outcome = row.outcome or {}
    steps: list[dict[str, Any]] = [
        {"stage": "received and stored", "at": row.received_at.isoformat(), "result": "250"}
    ]
    steps += outcome.get("timeline") or []
    if row.status not in IN_FLIGHT_INBOUND:
        steps.append(
            {
                "stage": "finished",
                "at": row.updated_at.isoformat(),
                "result": row.status.value + (f": {row.reason}" if row.reason else ""),
            }
        )
    sent = await session.scalars(
        select(OutboundMessage)
        .where(OutboundMessage.inbound_id == inbound_id)
        .order_by(OutboundMessage.id)
    )
    mails = [
        {
            "stage": f"{out.kind} to {out.recipient}",
            "at": out.created_at.isoformat(),
            "sent_at": out.sent_at.isoformat() if out.sent_at else None,
            "result": out.status.value + (f": {out.reason}" if out.reason else ""),
            "outbound_id": out.id,
        }
        for out in sent
    ]
    hooks = await session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.inbound_id == inbound_id)
        .order_by(WebhookDelivery.id)
    )
    calls = [
        {
            # The host only: a webhook URL's path or query often holds the app's secret.
            "stage": f"webhook {hook.event} to {urlsplit(hook.url).hostname}",
            "at": hook.created_at.isoformat(),
            "result": f"{hook.status.value} after {hook.attempts} attempt(s)"
            + (f": {hook.last_answer.split(' for url ')[0]}" if hook.last_answer else ""),
            "webhook_id": hook.id,
        }
        for hook in hooks
    ]
    steps = steps + mails + calls
    return _redacted({"id": inbound_id, "status": row.status.value, "steps": steps})


def _not_scanned(status: InboundStatus) -> dict[str, Any]:
    # Refused before the spam stage (automatic mail), or not processed yet.
    reason = "not scanned yet" if status in IN_FLIGHT_INBOUND else "not scanned"
    return {"scanned": False, "reason": reason}


def outbound_json(
    row: OutboundMessage, *, token: ReplyToken | None = None, reveal_reply_to: bool = False
) -> dict[str, Any]:
    """One outbound mail; ``token``: its reply token's row, for the expiry (see :func:`outbox`).

    ``reveal_reply_to=True`` keeps the live reply address in ``reply_to``: only for the command
    that just queued the mail and must hand the address to the app (``mailbot notify``). Pass
    the row as queued: once ``sent`` or ``failed``, a row read back holds only the fingerprint.
    """
    data = _redacted(
        {
            "id": row.id,
            "status": row.status.value,
            "reason": row.reason,
            "message_id": row.message_id,
            "mail_from": row.mail_from,
            "recipient": row.recipient,
            "kind": row.kind,
            "reply_to": row.reply_to,
            # Whose address it is and until when, instead of the address itself.
            "reply_token": _token_json(row, token),
            "subject": row.subject,
            "attempts": row.attempts,
            # deferred: when it is tried again; sending: when the sender's lease runs out.
            "next_attempt_at": row.next_attempt_at.isoformat() if row.next_attempt_at else None,
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
            "inbound_id": row.inbound_id,
            "created_at": row.created_at.isoformat(),
            "sent_at": row.sent_at.isoformat() if row.sent_at else None,
        }
    )
    if reveal_reply_to:
        data["reply_to"] = row.reply_to
    return data


def _token_json(row: OutboundMessage, token: ReplyToken | None) -> dict[str, Any] | None:
    found = _fingerprint_of(row.reply_to)
    if found is None:
        return None  # a notice: no reply address
    return {
        "fingerprint": found,
        "participant_id": row.participant_id,
        "expires_at": token.expires_at.isoformat() if token else None,
        "revoked": token.revoked_at is not None if token else None,
    }


def _fingerprint_of(reply_to: str | None) -> str | None:
    """The fingerprint of the token in a reply address, live or already scrubbed."""
    if not reply_to:
        return None
    local = split(reply_to)[0]
    token = local[local.find("+") + 1 :] if "+" in local else ""
    if token.startswith(MARK):
        return token[len(MARK) :] or None
    return fingerprint(token) if token else None


async def outbox(
    session: AsyncSession, status: OutboundStatus | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    query = select(OutboundMessage).order_by(OutboundMessage.id.desc()).limit(limit)
    if status is not None:
        query = query.where(OutboundMessage.status == status)
    rows = list(await session.scalars(query))
    # Each row's token, found by its fingerprint among its participant's tokens (a scrubbed
    # row keeps only the fingerprint; 24 bits are unique enough within one participant).
    people = {r.participant_id for r in rows if r.participant_id is not None}
    issued: dict[int, list[ReplyToken]] = {}
    if people:
        tokens_of = select(ReplyToken).where(ReplyToken.participant_id.in_(people))
        for token in await session.scalars(tokens_of):
            issued.setdefault(token.participant_id, []).append(token)

    def token_of(row: OutboundMessage) -> ReplyToken | None:
        found = _fingerprint_of(row.reply_to)
        candidates = issued.get(row.participant_id or 0, []) if found else []
        return next((t for t in candidates if t.token_hash.startswith(found or "")), None)

    return [outbound_json(row, token=token_of(row)) for row in rows]


async def conversation(session: AsyncSession, key: str) -> dict[str, Any] | None:
    """A conversation with its participants, each with their reply tokens (fingerprint and
    expiry, never the token), and its comments (which may quote an address: redacted)."""
    found = await conversations.get(session, key)
    if found is None:
        return None
    data = conversations.to_json(found)
    ids = [p["id"] for p in data["participants"]]
    issued: dict[int, list[dict[str, Any]]] = {}
    if ids:
        query = (
            select(ReplyToken)
            .where(ReplyToken.participant_id.in_(ids))
            .order_by(ReplyToken.id.desc())
        )
        for token in await session.scalars(query):
            issued.setdefault(token.participant_id, []).append(token_json(token))
    for person in data["participants"]:
        person["tokens"] = issued.get(person["id"], [])
    # Each comment lists the files of the mail it came from (downloads: /api/messages/{id}).
    files = await stored_attachments.of_messages(
        session, [c["inbound_id"] for c in data["comments"] if c["inbound_id"] is not None]
    )
    for comment in data["comments"]:
        comment["attachments"] = files.get(comment["inbound_id"], [])
    return _redacted(data)


def token_json(token: ReplyToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "fingerprint": token.token_hash[:6],
        "created_at": token.created_at.isoformat(),
        "expires_at": token.expires_at.isoformat(),
        "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
        "live": token.revoked_at is None and token.expires_at > utcnow(),
    }


async def conversation_list(
    session: AsyncSession, *, limit: int = 100, before_id: int | None = None
) -> list[dict[str, Any]]:
    """Conversations, newest first, with how many take part and how many comments."""
    people = (
        select(func.count(Participant.id))
        .where(Participant.conversation_id == Conversation.id)
        .scalar_subquery()
    )
    said = (
        select(func.count(Comment.id)).where(Comment.conversation_id == Conversation.id)
    ).scalar_subquery()
    last = (
        select(func.max(Comment.created_at)).where(Comment.conversation_id == Conversation.id)
    ).scalar_subquery()
    query = select(Conversation, people, said, last).order_by(Conversation.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(Conversation.id < before_id)
    rows = (await session.execute(query)).all()
    return [
        _redacted(
            {
                "id": c.id,
                "key": c.key,
                "subject": c.subject,
                "bot": c.bot,
                "created_at": c.created_at.isoformat(),
                "participants": n_people,
                "comments": n_said,
                "last_comment_at": latest.isoformat() if latest else None,
            }
        )
        for c, n_people, n_said, latest in rows
    ]


def _redacted(data: dict[str, Any]) -> dict[str, Any]:
    # redact() walks any JSON value and gives back the same shape: a dict for a dict.
    return cast(dict[str, Any], redact(data))
