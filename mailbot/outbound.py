"""Every mail mailbot sends goes through one durable outbox.

:func:`queue` (a bot's notification) and :func:`queue_notice` (why a message was refused)
compose through :func:`mailbot.compose.compose` (threading headers, the recipient's own reply
address, ``Auto-Submitted``, a VERP return path) and store it in the same transaction as
whatever caused it, so a comment is never saved without its notifications, nor the other way
round. :func:`deliver_due` hands stored messages to a :class:`Transport` (the relay, through
aiosmtplib, by default): 2xx → ``sent``, 4xx or a dead relay → stays ``queued`` and is
retried with backoff, 5xx → ``failed``.
Without a relay, messages are ``held``: kept and listed, sent once a relay is configured.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import uuid
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import undefer

from mailbot import addresses, headers, outbox_record, throttle, tokens
from mailbot.compose import AUTO_GENERATED, AUTO_REPLIED, compose
from mailbot.config import Settings
from mailbot.db import Sessions
from mailbot.errors import DeliveryError
from mailbot.models import Conversation, OutboundMessage, OutboundStatus, Participant, utcnow
from mailbot.retry import backoff, wait_for_work

log = logging.getLogger(__name__)


def new_message_id(domain: str) -> str:
    return f"<{uuid.uuid4().hex}@{domain}>"


NO_RELAY_REASON = "no relay configured (set MAILBOT_RELAY)"


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
    """Compose a mail to one participant and store it; the caller commits.

    Every header value goes through :mod:`mailbot.headers`, whatever is stored or passed in.
    A mail that cannot be composed safely (an address stored before addresses were checked)
    is stored ``failed`` with the reason: the caller's comment and the other recipients'
    mail go on."""
    subject = headers.subject(subject)
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
            auto_submitted=AUTO_GENERATED,
            # Never empty: classify.py recognises our own mail coming back by this header.
            conversation_key=headers.conversation_key(conversation.key)
            or f"conversation-{conversation.id}",
        )
    except headers.InvalidAddress as exc:
        return _unsendable(settings, session, conversation, to, subject, inbound_id, str(exc))
    except headers.UnsafeMessage as exc:
        log.error("composed mail %s refused, not sent: %s", message_id, exc)
        reason = f"internal error, composed headers unsafe: {exc}"
        return _unsendable(settings, session, conversation, to, subject, inbound_id, reason)
    row = OutboundMessage(
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
    path. A hard-bounced participant or a runaway loop: stored ``failed`` with why, never sent."""
    blocked = await throttle.refusal(session, settings, address, to)
    row.status = initial_status(settings, blocked)
    row.reason = blocked or (None if settings.relay else NO_RELAY_REASON)
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
        return OutboundStatus.failed
    return OutboundStatus.queued if settings.relay else OutboundStatus.held


LEASE = timedelta(minutes=5)
SCRUB_EVERY = 3600.0  # seconds between sweeps of mailbot.outbox_record.scrub_finished


class Transport(Protocol):
    """Where delivery hands one message: the relay by default (:class:`RelayTransport`),
    ``mailbot.testing.RecordingTransport`` in a bot's tests. Raises :class:`DeliveryError`
    (permanent or not) when the message was not taken."""

    async def send(self, mail_from: str, recipient: str, raw: bytes) -> None: ...


class RelayTransport:
    """The SMTP relay of ``settings.relay``, one transaction per message (:func:`send`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, mail_from: str, recipient: str, raw: bytes) -> None:
        await send(self.settings, mail_from, recipient, raw)


async def deliver_due(
    sessions: Sessions,
    settings: Settings,
    limit: int = 20,
    transport: Transport | None = None,
) -> int:
    """Send what is due; returns how many were tried. Never raises for a delivery problem.

    Rows are leased (``next_attempt_at`` pushed past the send) in one short transaction, so
    no database lock is held while talking to the relay, and no other node sends them twice.
    Each lease is renewed just before its row is sent, and only if it is still ours: a batch
    sent slowly never outlives a lease another node could take. What the relay took is
    recorded even across a database blip (mailbot/outbox_record.py), and never sent again.
    ``transport`` defaults to the relay of ``settings.relay``.
    """
    if not settings.relay:
        return 0  # without a relay, rows are ``held``: kept until one is configured
    if transport is None:
        transport = RelayTransport(settings)
    await outbox_record.flush(sessions)  # the outcomes a database blip kept from us, first
    taken = outbox_record.unrecorded(sessions)
    now = utcnow()
    lease = now + LEASE
    async with sessions() as session, session.begin():
        query = (
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
        if taken:
            query = query.where(OutboundMessage.id.not_in(taken))
        rows = list(await session.scalars(query))
        for row in rows:
            row.next_attempt_at = lease
    for row in rows:
        if await _renew(sessions, row.id, lease):
            await _attempt(sessions, settings, row, transport)
    return len(rows)


async def _renew(sessions: Sessions, outbound_id: int, lease: datetime) -> bool:
    """A fresh lease for one row, if the one we took is still ours (nobody took it since)."""
    async with sessions() as session, session.begin():
        result = await session.execute(
            update(OutboundMessage)
            .where(
                OutboundMessage.id == outbound_id,
                OutboundMessage.next_attempt_at == lease,
                OutboundMessage.status.in_([OutboundStatus.queued, OutboundStatus.held]),
            )
            .values(next_attempt_at=utcnow() + LEASE)
        )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def _attempt(
    sessions: Sessions, settings: Settings, row: OutboundMessage, transport: Transport
) -> None:
    attempts = row.attempts + 1
    values: dict[str, object] = {"attempts": attempts}
    try:
        await transport.send(row.mail_from, row.recipient, row.raw)
    except DeliveryError as exc:
        values["reason"] = exc.reason
        if exc.permanent or attempts >= settings.max_attempts * 2:
            values["status"] = OutboundStatus.failed
        else:
            values["status"] = OutboundStatus.queued
            values["next_attempt_at"] = utcnow() + backoff(settings.retry_base_seconds, attempts)
    else:
        values.update(status=OutboundStatus.sent, reason=None, sent_at=utcnow())
    if values["status"] in outbox_record.FINAL:
        # Delivered or given up: the reply address is needed no more, only its fingerprint.
        values.update(outbox_record.scrubbed(row))
        await outbox_record.record_final(sessions, row.id, values)
        return
    try:
        await outbox_record.write(sessions, row.id, values)
    except Exception:  # noqa: BLE001 - not sent: the lease brings the row back, nothing is lost
        log.warning("recording a retry of outbound %s failed; retried after the lease", row.id)


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
    loop = asyncio.get_running_loop()
    scrub_at = loop.time()  # at start, then hourly: final rows still holding a reply address
    while True:
        if loop.time() >= scrub_at:
            try:
                if scrubbed := await outbox_record.scrub_finished(sessions):
                    log.info("took the reply address out of %s finished outbound rows", scrubbed)
                scrub_at = loop.time() + SCRUB_EVERY
            except Exception as exc:  # noqa: BLE001 - next pass
                log.warning("scrubbing finished outbound rows failed: %s", type(exc).__name__)
        try:
            tried = await deliver_due(sessions, settings)
        except Exception:  # noqa: BLE001 - a dead database must not end the loop
            log.exception("outbox pass failed; retrying")
            tried = 0
        if tried:
            continue
        wake.clear()
        await wait_for_work(wake, settings.poll_seconds)
