"""Every mail mailbot sends goes through one durable outbox.

:func:`queue` composes the message (threading headers, the recipient's own reply address,
``Auto-Submitted``, a VERP return path) and stores it in the same transaction as whatever
caused it, so a comment is never saved without its notifications, nor the other way round.
:func:`deliver_due` hands stored messages to the relay with aiosmtplib: 2xx → ``sent``,
4xx or a dead relay → stays ``queued`` and is retried with backoff, 5xx → ``failed``.
Without a relay, messages are ``held``: kept and listed, sent once a relay is configured.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import uuid
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from urllib.parse import unquote, urlsplit

import aiosmtplib
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import undefer

from mailbot import throttle, tokens
from mailbot.config import Settings
from mailbot.db import Sessions
from mailbot.errors import DeliveryError
from mailbot.models import Conversation, OutboundMessage, OutboundStatus, Participant, utcnow

log = logging.getLogger(__name__)

VERP_PREFIX = "bounces+"


def new_message_id(domain: str) -> str:
    return f"<{uuid.uuid4().hex}@{domain}>"


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
) -> OutboundMessage:
    """Compose a mail to one participant and store it; the caller commits."""
    token = await tokens.issue(session, to, timedelta(days=settings.token_ttl_days))
    message_id = new_message_id(settings.hostname)
    verp = f"{VERP_PREFIX}{secrets.token_hex(10)}@{settings.domain}"
    msg = EmailMessage()
    sender_name = f"{author_name} (via {settings.from_name})" if author_name else settings.from_name
    msg["From"] = formataddr((sender_name, settings.from_address))
    msg["To"] = formataddr((to.name, to.email))
    msg["Reply-To"] = tokens.reply_address(token, settings.domain)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = message_id
    root = conversation.root_message_id
    parent = in_reply_to or root
    if parent:
        msg["In-Reply-To"] = parent
        msg["References"] = " ".join(dict.fromkeys(x for x in (root, in_reply_to) if x))
    # RFC 3834: a bot's mail is automatic, so well-behaved auto-responders never answer it.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Mailbot-Conversation"] = conversation.key
    msg.set_content(body)
    # A hard-bounced participant or a runaway loop: stored as failed, with why, never sent.
    blocked = await throttle.refusal(session, settings, to.email, to)
    row = OutboundMessage(
        status=initial_status(settings, blocked),
        reason=blocked or (None if settings.relay else "no relay configured (set MAILBOT_RELAY)"),
        message_id=message_id,
        mail_from=verp,
        recipient=to.email,
        reply_to=str(msg["Reply-To"]),
        subject=subject,
        raw=msg.as_bytes(),
        conversation_id=conversation.id,
        participant_id=to.id,
        inbound_id=inbound_id,
    )
    session.add(row)
    return row


def initial_status(settings: Settings, blocked: str | None) -> OutboundStatus:
    if blocked:
        return OutboundStatus.failed
    return OutboundStatus.queued if settings.relay else OutboundStatus.held


LEASE = timedelta(minutes=5)


async def deliver_due(sessions: Sessions, settings: Settings, limit: int = 20) -> int:
    """Send what is due; returns how many were tried. Never raises for a delivery problem.

    Rows are leased (``next_attempt_at`` pushed past the send) in one short transaction, so
    no database lock is held while talking to the relay, and no other node sends them twice.
    """
    if not settings.relay:
        return 0
    now = utcnow()
    async with sessions() as session, session.begin():
        rows = list(
            await session.scalars(
                select(OutboundMessage)
                .where(
                    OutboundMessage.status.in_([OutboundStatus.queued, OutboundStatus.held]),
                    or_(
                        OutboundMessage.next_attempt_at.is_(None),
                        OutboundMessage.next_attempt_at <= now,
                    ),
                )
                .order_by(OutboundMessage.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
                .options(undefer(OutboundMessage.raw))
            )
        )
        for row in rows:
            row.next_attempt_at = now + LEASE
    for row in rows:
        await _attempt(sessions, settings, row)
    return len(rows)


async def _attempt(sessions: Sessions, settings: Settings, row: OutboundMessage) -> None:
    attempts = row.attempts + 1
    values: dict[str, object] = {"attempts": attempts}
    try:
        await send(settings, row.mail_from, row.recipient, row.raw)
    except DeliveryError as exc:
        values["reason"] = exc.reason
        if exc.permanent or attempts >= settings.max_attempts * 2:
            values["status"] = OutboundStatus.failed
        else:
            delay = settings.retry_base_seconds * 2 ** min(attempts - 1, 10)
            values["status"] = OutboundStatus.queued
            values["next_attempt_at"] = utcnow() + timedelta(seconds=delay)
    else:
        values.update(status=OutboundStatus.sent, reason=None, sent_at=utcnow())
    async with sessions() as session, session.begin():
        await session.execute(
            update(OutboundMessage).where(OutboundMessage.id == row.id).values(**values)
        )


async def send(settings: Settings, mail_from: str, recipient: str, raw: bytes) -> None:
    """One SMTP transaction to the relay, mapped to a DeliveryError that says if it is final."""
    assert settings.relay
    url = urlsplit(settings.relay)
    implicit_tls = url.scheme == "smtps"
    smtp = aiosmtplib.SMTP(
        hostname=url.hostname,
        port=url.port or (465 if implicit_tls else 25),
        use_tls=implicit_tls,
        # Explicit on purpose: aiosmtplib's default silently stays plaintext when not offered.
        start_tls=settings.relay_starttls,
        timeout=settings.relay_timeout,
        local_hostname=settings.hostname,
        tls_context=ssl.create_default_context()
        if implicit_tls or settings.relay_starttls
        else None,
        username=unquote(url.username) if url.username else None,
        password=unquote(url.password) if url.password else None,
    )
    try:
        # aiosmtplib's timeout is per socket operation; bound the whole transaction too.
        async with asyncio.timeout(settings.relay_timeout * 3):
            async with smtp:
                errors, _ = await smtp.sendmail(mail_from, [recipient], raw)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        refusal = exc.recipients[0]
        raise DeliveryError(
            f"{refusal.code} {refusal.message}", permanent=refusal.code >= 500
        ) from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise DeliveryError(f"{exc.code} {exc.message}", permanent=exc.code >= 500) from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise DeliveryError(f"relay unreachable: {exc!r}", permanent=False) from exc
    if errors:
        code, message = next(iter(errors.values()))
        raise DeliveryError(f"{code} {message}", permanent=code >= 500)


async def sender_loop(sessions: Sessions, settings: Settings, wake: asyncio.Event) -> None:
    """Deliver forever: woken by new mail, or every poll interval for retries."""
    while True:
        try:
            tried = await deliver_due(sessions, settings)
        except Exception:  # noqa: BLE001 - a dead database must not end the loop
            log.exception("outbox pass failed; retrying")
            tried = 0
        if tried:
            continue
        wake.clear()
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        # that arrives as the event is set, and the node then never stops.
        try:
            async with asyncio.timeout(settings.poll_seconds):
                await wake.wait()
        except TimeoutError:
            pass
