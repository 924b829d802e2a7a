"""Hand what the outbox holds to a :class:`Transport`, and record what came of it.

:func:`deliver_due` leases due messages (``sending``) and sends them through the transport
(the relay, or each recipient domain's MX: :func:`transport_for`), several mails to one
destination over one connection: 2xx → ``sent``; 4xx, a timeout or a dead server →
``deferred``, tried again with backoff and jitter until ``delivery_lifetime_hours`` have
passed, then ``failed``; 5xx → ``failed``, and the participant is suspended as after a hard
bounce; a participant who is suspended, or unsubscribed from a notification, since it was
queued → ``suppressed``. :func:`sender_loop` runs it whenever the outbox is woken.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import undefer

from mailbot.config import Settings
from mailbot.errors import DeliveryError
from mailbot.outbound import record as outbox_record
from mailbot.outbound import signing, throttle
from mailbot.outbound.mx import MxTransport
from mailbot.outbound.relay import RelayTransport
from mailbot.retry import backoff, wait_for_work
from mailbot.store.db import Sessions
from mailbot.store.models import OutboundMessage, OutboundStatus, Participant, utcnow

log = logging.getLogger(__name__)


LEASE = timedelta(minutes=5)
SCRUB_EVERY = 3600.0  # seconds between sweeps of mailbot.outbound.record.scrub_finished
DUE = (OutboundStatus.held, OutboundStatus.queued, OutboundStatus.deferred)


class Transport(Protocol):
    """Where delivery hands one message: :class:`RelayTransport` or :class:`MxTransport`,
    ``mailbot.testing.RecordingTransport`` in a bot's tests. Raises :class:`DeliveryError`
    (permanent or not) when the message was not taken. A transport may also have
    ``destination(recipient) -> str`` (mails to one destination are sent one after another,
    so they can share a connection) and ``close()`` (called when the outbox goes idle)."""

    async def send(self, mail_from: str, recipient: str, raw: bytes) -> None: ...


def transport_for(settings: Settings) -> Transport | None:
    """The transport the settings ask for; None when outbound mail is held."""
    if settings.relay:
        return RelayTransport(settings)
    if settings.delivery == "mx":
        return MxTransport(settings)
    return None


async def deliver_due(
    sessions: Sessions,
    settings: Settings,
    limit: int = 100,
    transport: Transport | None = None,
) -> int:
    """Send what is due; returns how many were tried. Never raises for a delivery problem.

    Rows are leased (``sending``, ``next_attempt_at`` the lease's end) in one short
    transaction, so no database lock is held while talking SMTP, and no other node sends
    them twice; a lease that runs out (its node died) lets another pass take the row again.
    Each lease is renewed before its row is sent once half of it has gone, and only if it is
    still ours. What the server took is recorded even across a database blip
    (mailbot/outbound/record.py), and never sent again. ``transport`` defaults to
    :func:`transport_for`, opened and closed for this pass.
    """
    if transport is None:
        if (own := transport_for(settings)) is None:
            return 0  # rows are ``held``: kept until a relay or MX delivery is configured
        try:
            return await deliver_due(sessions, settings, limit, own)
        finally:
            await close(own)
    if not settings.sends:
        return 0
    await outbox_record.flush(sessions)  # the outcomes a database blip kept from us, first
    rows = await _lease(sessions, limit, utcnow() + LEASE)
    bounced: set[int] = set()  # participants a 5xx suspended during this pass
    recorder = outbox_record.Recorder(sessions)
    try:
        async with asyncio.TaskGroup() as lanes:
            for lane in _lanes(settings, transport, rows):
                lanes.create_task(_lane(sessions, settings, lane, transport, bounced, recorder))
    finally:
        await recorder.close()
    return len(rows)


def _lanes(
    settings: Settings, transport: Transport, rows: list[OutboundMessage]
) -> list[list[OutboundMessage]]:
    """Rows in lanes sent side by side: per destination, at most as many lanes as it may
    have connections; one participant's mails all in one lane, in order, so that a hard
    bounce stops the rest of them."""
    destination = getattr(transport, "destination", None)
    width = max(1, settings.delivery_connections_per_destination)
    lanes: dict[tuple[str, int], list[OutboundMessage]] = defaultdict(list)
    for row in rows:
        where = destination(row.recipient) if destination else ""
        lanes[where, (row.participant_id or row.id) % width].append(row)
    return list(lanes.values())


async def close(transport: Transport) -> None:
    """Let go of the transport's open connections, if it keeps any."""
    closing = getattr(transport, "close", None)
    if closing is not None:
        await closing()


async def _lease(sessions: Sessions, limit: int, lease: datetime) -> list[OutboundMessage]:
    """Take up to ``limit`` due rows (and rows whose sender's lease ran out) as ``sending``.
    Rows whose participant is suspended, or unsubscribed from a notification, since they
    were queued become ``suppressed`` here instead, in the same transaction."""
    taken = outbox_record.unrecorded(sessions)
    now = utcnow()
    due = or_(
        and_(
            OutboundMessage.status.in_(DUE),
            or_(OutboundMessage.next_attempt_at.is_(None), OutboundMessage.next_attempt_at <= now),
        ),
        and_(
            OutboundMessage.status == OutboundStatus.sending,
            OutboundMessage.next_attempt_at <= now,
        ),
    )
    async with sessions() as session, session.begin():
        query = (
            select(OutboundMessage)
            .where(due)
            .order_by(OutboundMessage.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .options(undefer(OutboundMessage.raw))
        )
        if taken:
            query = query.where(OutboundMessage.id.not_in(taken))
        rows = list(await session.scalars(query))
        stopped = await _stopped(session, rows)
        for row in rows:
            if (why := stopped.get(row.id)) is not None:
                row.status, row.reason = OutboundStatus.suppressed, why
                for name, value in outbox_record.scrubbed(row).items():
                    setattr(row, name, value)
            else:
                row.status, row.next_attempt_at = OutboundStatus.sending, lease
    return [row for row in rows if row.id not in stopped]


async def _stopped(session: AsyncSession, rows: list[OutboundMessage]) -> dict[int, str]:
    """Rows not to send after all: their participant was suspended or unsubscribed since."""
    ids = {row.participant_id for row in rows if row.participant_id is not None}
    if not ids:
        return {}
    people = {
        p.id: p
        for p in await session.scalars(
            select(Participant).where(
                Participant.id.in_(ids),
                or_(Participant.bounced_at.is_not(None), Participant.muted_at.is_not(None)),
            )
        )
    }
    stopped: dict[int, str] = {}
    for row in rows:
        person = people.get(row.participant_id or 0)
        if person is None:
            continue
        if person.bounced_at is not None:
            stopped[row.id] = throttle.suspended(person)
        elif person.muted_at is not None and row.kind == "notification":
            stopped[row.id] = f"not sent: {throttle.UNSUBSCRIBED}"
    return stopped


async def _lane(
    sessions: Sessions,
    settings: Settings,
    rows: list[OutboundMessage],
    transport: Transport,
    bounced: set[int],
    recorder: outbox_record.Recorder,
) -> None:
    """Send ``rows`` (one destination) one after another, so they can share a connection.
    Before each, the lease is renewed if what is left of it could not cover the send (which
    is cut off at :func:`send_budget`): no other node can take a row while it is sent."""
    for row in rows:
        lease = row.next_attempt_at
        assert lease is not None
        if row.participant_id in bounced:
            why = "not sent: the recipient is suspended after a hard bounce in this pass"
            values = {"status": OutboundStatus.suppressed, "reason": why}
            recorder.add(
                outbox_record.Outcome(
                    row.id, {**values, **outbox_record.scrubbed(row)}, lease=lease
                )
            )
            continue
        if lease - utcnow() < send_budget():
            renewed = await _renew(sessions, row.id, lease)
            if renewed is None:
                continue  # not ours any more: another pass took it
            row.next_attempt_at = lease = renewed
        outcome = await _attempt(settings, row, transport)
        recorder.add(outcome)
        if outcome.bounce is not None:
            bounced.add(outcome.bounce[0])


def send_budget() -> timedelta:
    """The longest one send may take, waits for a connection included: most of a lease."""
    return LEASE * 0.9


async def _renew(sessions: Sessions, outbound_id: int, lease: datetime) -> datetime | None:
    """A fresh lease for one row, if the one we took is still ours (nobody took it since)."""
    fresh = utcnow() + LEASE
    async with sessions() as session, session.begin():
        result = await session.execute(
            update(OutboundMessage)
            .where(
                OutboundMessage.id == outbound_id,
                OutboundMessage.next_attempt_at == lease,
                OutboundMessage.status == OutboundStatus.sending,
            )
            .values(next_attempt_at=fresh)
        )
    return fresh if result.rowcount else None  # type: ignore[attr-defined]


def expires(settings: Settings, row: OutboundMessage) -> datetime:
    """When a mail refused for now stops being tried."""
    return row.expires_at or row.created_at + timedelta(hours=settings.delivery_lifetime_hours)


async def _attempt(
    settings: Settings, row: OutboundMessage, transport: Transport
) -> outbox_record.Outcome:
    """Send one row; what came of it, to record (its participant's bounce on a 5xx)."""
    attempts = row.attempts + 1
    values: dict[str, object] = {"attempts": attempts}
    bounce: str | None = None
    budget = send_budget().total_seconds()
    try:
        raw = await _signed(settings, row.raw)
        try:
            async with asyncio.timeout(budget):
                await transport.send(row.mail_from, row.recipient, raw)
        except TimeoutError as exc:
            why = f"no server took it within {budget:g} s"
            raise DeliveryError(why, permanent=False) from exc
        except DeliveryError:
            raise
        except Exception as exc:  # a bug or a library's surprise: a counted retry, said loudly
            log.exception("sending outbound %s failed unexpectedly", row.id)
            raise DeliveryError(f"unexpected: {exc!r}", permanent=False) from exc
    except DeliveryError as exc:
        values["reason"] = exc.reason
        if exc.permanent:
            values["status"] = OutboundStatus.failed
            bounce = exc.reason
        elif utcnow() >= expires(settings, row):
            values["status"] = OutboundStatus.failed
            hours = f"{settings.delivery_lifetime_hours:g}"
            values["reason"] = f"gave up after {hours} hours of trying: {exc.reason}"
        else:
            wait = backoff(settings.retry_base_seconds, attempts)
            values["status"] = OutboundStatus.deferred
            # Jitter: mails deferred together by one outage do not all come back at once.
            values["next_attempt_at"] = utcnow() + wait * random.uniform(0.8, 1.2)  # noqa: S311
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
    # A send is a fact, recorded whatever; a retry or a give-up only while the row is ours.
    lease = None if values["status"] is OutboundStatus.sent else row.next_attempt_at
    if values["status"] not in outbox_record.FINAL:
        return outbox_record.Outcome(row.id, values, lease=lease)
    # Delivered or given up: the reply address is needed no more, only its fingerprint.
    values.update(outbox_record.scrubbed(row))
    hard = (row.participant_id, bounce) if bounce and row.participant_id else None
    return outbox_record.Outcome(row.id, values, hard, lease)


async def _signed(settings: Settings, raw: bytes) -> bytes:
    """``raw`` with its DKIM signature; a key that broke since start is a retry, not a crash."""
    try:
        key = signing.key_for(settings)
        return raw if key is None else await key.sign_async(raw)
    except Exception as exc:  # noqa: BLE001 - counted as a failed attempt, with why
        raise DeliveryError(f"DKIM signing failed: {exc}", permanent=False) from exc


async def sender_loop(
    sessions: Sessions,
    settings: Settings,
    wake: asyncio.Event,
    transport: Transport | None = None,
) -> None:
    """Deliver forever: woken by new mail, or every poll interval for retries. Connections
    stay open while there is mail to send and are closed when the outbox goes idle."""
    transport = transport or transport_for(settings)
    loop = asyncio.get_running_loop()
    scrub_at = loop.time()  # at start, then hourly: final rows still holding a reply address
    try:
        while True:
            if loop.time() >= scrub_at:
                try:
                    if scrubbed := await outbox_record.scrub_finished(sessions):
                        log.info("took the reply address out of %s final outbound rows", scrubbed)
                    scrub_at = loop.time() + SCRUB_EVERY
                except Exception as exc:  # noqa: BLE001 - next pass
                    log.warning("scrubbing finished outbound rows failed: %s", type(exc).__name__)
            tried = 0
            if transport is not None:
                try:
                    tried = await deliver_due(sessions, settings, transport=transport)
                except Exception:  # noqa: BLE001 - a dead database must not end the loop
                    log.exception("outbox pass failed; retrying")
            if tried:
                continue
            if transport is not None:
                await close(transport)
            wake.clear()
            await wait_for_work(wake, settings.poll_seconds)
    finally:
        if transport is not None:
            # Awaited, even on the way out: the servers get their QUIT before the node stops.
            await close(transport)
