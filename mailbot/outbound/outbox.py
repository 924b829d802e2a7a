"""Every mail mailbot sends goes through one durable outbox; this module puts it there.

:func:`queue` (a bot's notification) and :func:`queue_notice` (why a message was refused)
compose through :func:`mailbot.outbound.compose.compose` (threading headers, the
recipient's own reply address, ``Auto-Submitted``, a VERP return path) and store it in the
same transaction as whatever caused it, so a comment is never saved without its
notifications, nor the other way round. With nowhere to send (no relay, no MX delivery),
messages are ``held``: kept and listed, sent once one is configured. Sending them is
:mod:`mailbot.outbound.delivery`.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from mailbot import addresses, headers
from mailbot.config import Settings
from mailbot.outbound import throttle, unsubscribe
from mailbot.outbound.compose import AUTO_GENERATED, AUTO_REPLIED, compose
from mailbot.outbound.rendering import OutgoingFile
from mailbot.store import tokens
from mailbot.store.models import (
    Conversation,
    OutboundMessage,
    OutboundStatus,
    Participant,
    utcnow,
)

log = logging.getLogger(__name__)


def new_message_id(domain: str) -> str:
    return f"<{uuid.uuid4().hex}@{domain}>"


NO_RELAY_REASON = "no relay configured (set MAILBOT_RELAY, or MAILBOT_DELIVERY=mx)"


async def queue(
    session: AsyncSession,
    settings: Settings,
    *,
    conversation: Conversation,
    to: Participant,
    subject: str,
    body: str,
    author_name: str | None = None,
    in_reply_to: str | None = None,
    inbound_id: int | None = None,
    kind: str = "notification",
    html: str | None = None,
    files: Sequence[OutgoingFile] = (),
) -> OutboundMessage:
    """Compose a mail to one participant and store it; the caller commits. ``kind`` is
    "notification" (``Auto-Submitted: auto-generated``) or an answer to the participant's
    own mail, such as a command transcript (``auto-replied``).

    Every header value goes through :mod:`mailbot.headers`, whatever is stored or passed in.
    A mail that cannot be composed safely (an address stored before addresses were checked)
    is stored ``failed`` with the reason: the caller's comment and the other recipients'
    mail go on."""
    subject = headers.subject(subject)
    if kind == "notification" and to.muted_at is not None:
        # They unsubscribed from this conversation (/unsubscribe, one click): kept, not sent.
        why = throttle.UNSUBSCRIBED
        row = _unsendable(settings, session, conversation, to, subject, inbound_id, why)
        row.status = OutboundStatus.suppressed
        return row
    try:
        recipient = headers.addr_spec(to.email)
    except headers.InvalidAddress as exc:
        return _unsendable(settings, session, conversation, to, subject, inbound_id, str(exc))
    token = await tokens.issue(session, to, timedelta(days=settings.token_ttl_days))
    reply_to = tokens.reply_address(token, settings.domain)
    message_id = new_message_id(settings.hostname)
    via = headers.display_name(settings.from_name)
    author = headers.display_name(author_name or "")
    root = headers.message_id(conversation.root_message_id)
    try:
        raw = compose(
            settings,
            sender_name=f"{author} (via {via})" if author else via,
            to_name=to.name,
            recipient=recipient,
            reply_to=reply_to,
            subject=subject,
            body=body,
            message_id=message_id,
            thread=(root, headers.message_id(in_reply_to) or root),
            auto_submitted=AUTO_GENERATED if kind == "notification" else AUTO_REPLIED,
            # Never empty: classify.py recognises our own mail coming back by this header.
            conversation_key=headers.conversation_key(conversation.key)
            or f"conversation-{conversation.id}",
            list_id=f"conversation-{conversation.id}.{settings.domain}",
            # A notification can be stopped in one click; an answer to the person's own
            # mail (a command transcript) is not a subscription.
            unsubscribe=unsubscribe.link(settings, to.id) if kind == "notification" else None,
            html=html,
            files=files,
        )
    except headers.InvalidAddress as exc:
        return _unsendable(settings, session, conversation, to, subject, inbound_id, str(exc))
    except headers.UnsafeMessage as exc:
        log.error("composed mail %s refused, not sent: %s", message_id, exc)
        reason = f"internal error, composed headers unsafe: {exc}"
        return _unsendable(settings, session, conversation, to, subject, inbound_id, reason)
    row = OutboundMessage(
        kind=kind,
        message_id=message_id,
        recipient=recipient,
        reply_to=reply_to,
        subject=subject,
        raw=raw,
        conversation_id=conversation.id,
        participant_id=to.id,
        inbound_id=inbound_id,
    )
    return await _stored(session, settings, to, recipient, row)


async def queue_notice(
    session: AsyncSession,
    settings: Settings,
    *,
    kind: str,
    to: str,
    subject: str,
    body: str,
    in_reply_to: str | None,
    inbound_id: int,
) -> OutboundMessage:
    """Compose an automatic answer to a mail sent to us (``kind``, e.g. a refusal notice) and
    store it, flushed so it has its id; the caller commits. It carries no reply address: an
    answer to it is not read. Raises :class:`headers.InvalidAddress` or
    :class:`headers.UnsafeMessage` when it cannot be composed safely; nothing is stored."""
    message_id = new_message_id(settings.hostname)
    parent = headers.message_id(in_reply_to)
    raw = compose(
        settings,
        sender_name=headers.display_name(settings.from_name),
        to_name="",
        recipient=to,
        reply_to=None,
        subject=subject,
        body=body,
        message_id=message_id,
        thread=(None, parent),
        auto_submitted=AUTO_REPLIED,
        conversation_key=None,
    )
    row = OutboundMessage(
        kind=kind,
        message_id=message_id,
        recipient=to.lower(),
        subject=subject,
        raw=raw,
        inbound_id=inbound_id,
    )
    await _stored(session, settings, None, to, row)
    await session.flush()
    return row


async def _stored(
    session: AsyncSession,
    settings: Settings,
    to: Participant | None,
    address: str,
    row: OutboundMessage,
) -> OutboundMessage:
    """``row``, a composed mail to ``address``, added with its first status and a VERP return
    path. A hard-bounced participant or a runaway loop: stored ``suppressed`` with why, never
    sent."""
    blocked = await throttle.refusal(session, settings, address, to)
    row.status = initial_status(settings, blocked)
    row.reason = blocked or (None if settings.sends else NO_RELAY_REASON)
    row.expires_at = utcnow() + timedelta(hours=settings.delivery_lifetime_hours)
    row.mail_from = addresses.bounce_address(secrets.token_hex(10), settings.domain)
    session.add(row)
    return row


def _unsendable(
    settings: Settings,
    session: AsyncSession,
    conversation: Conversation,
    to: Participant,
    subject: str,
    inbound_id: int | None,
    why: str,
) -> OutboundMessage:
    """A mail that cannot be composed safely: stored ``failed`` with why, never sent."""
    row = OutboundMessage(
        status=OutboundStatus.failed,
        reason=f"not sent: {why}",
        message_id=new_message_id(settings.hostname),
        mail_from=addresses.bounce_address(secrets.token_hex(10), settings.domain),
        recipient=headers.header_text(to.email, 320),
        subject=subject,
        raw=b"",
        conversation_id=conversation.id,
        participant_id=to.id,
        inbound_id=inbound_id,
    )
    session.add(row)
    return row


def initial_status(settings: Settings, blocked: str | None) -> OutboundStatus:
    if blocked:
        return OutboundStatus.suppressed
    return OutboundStatus.queued if settings.sends else OutboundStatus.held
