"""Hand what the outbox holds to a :class:`Transport`, and record what came of it.

:func:`deliver_due` leases due messages, sends each through the transport (the relay, through
aiosmtplib, by default): 2xx → ``sent``, 4xx or a dead relay → stays ``queued`` and is retried
with backoff, 5xx → ``failed``. :func:`sender_loop` runs it whenever the outbox is woken.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib
from sqlalchemy import or_, select, update
from sqlalchemy.orm import undefer

from mailbot.config import Settings
from mailbot.errors import DeliveryError
from mailbot.outbound import record as outbox_record
from mailbot.outbound import signing
from mailbot.retry import backoff, wait_for_work
from mailbot.store.db import Sessions
from mailbot.store.models import OutboundMessage, OutboundStatus, utcnow

log = logging.getLogger(__name__)


LEASE = timedelta(minutes=5)
SCRUB_EVERY = 3600.0  # seconds between sweeps of mailbot.outbound.record.scrub_finished


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
    recorded even across a database blip (mailbot/outbound/record.py), and never sent again.
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
        raw = await _signed(settings, row.raw)
        await transport.send(row.mail_from, row.recipient, raw)
    except DeliveryError as exc:
        values["reason"] = exc.reason
        if exc.permanent or attempts >= settings.max_attempts * 2:
            values["status"] = OutboundStatus.failed
        else:
            values["status"] = OutboundStatus.queued
            values["next_attempt_at"] = utcnow() + backoff(settings.retry_base_seconds, attempts)
    else:
        values.update(status=OutboundStatus.sent, reason=None, sent_at=utcnow())
    log.info(
        "outbound %s %s to %s%s",
        row.id,
        values["status"],
        row.recipient,
        f" ({values['reason']})" if values.get("reason") else "",
        extra={"outbound": row.id, "status": str(values["status"])},
    )
    if values["status"] in outbox_record.FINAL:
        # Delivered or given up: the reply address is needed no more, only its fingerprint.
        values.update(outbox_record.scrubbed(row))
        await outbox_record.record_final(sessions, row.id, values)
        return
    try:
        await outbox_record.write(sessions, row.id, values)
    except Exception:  # noqa: BLE001 - not sent: the lease brings the row back, nothing is lost
        log.warning("recording a retry of outbound %s failed; retried after the lease", row.id)


async def _signed(settings: Settings, raw: bytes) -> bytes:
    """``raw`` with its DKIM signature; a key that broke since start is a retry, not a crash."""
    try:
        key = signing.key_for(settings)
        return raw if key is None else await key.sign_async(raw)
    except Exception as exc:  # noqa: BLE001 - counted as a failed attempt, with why
        raise DeliveryError(f"DKIM signing failed: {exc}", permanent=False) from exc


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
