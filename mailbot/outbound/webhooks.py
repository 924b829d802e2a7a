"""Webhook delivery: each queued event (mailbot/store/webhooks.py) POSTed to its URL, signed,
retried with backoff until the app answers 2xx, never on the SMTP path.

The body is JSON: ``{"id", "event", "created_at", "message": <GET /api/messages/{id}>,
"comment": {...}?}``, redacted like every API answer, made at the first attempt and kept, so
every retry sends the same bytes. Headers: ``Mailbot-Event``, ``Mailbot-Delivery`` (the id;
the same on a retry: an app that saw it already can ignore it) and::

    Mailbot-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

An app checks the HMAC over the timestamp and the raw body with its copy of the secret, in
constant time, and refuses a timestamp older than a few minutes (README, *Webhooks*).

Rows are leased (``next_attempt_at`` pushed past the attempt) with ``SKIP LOCKED`` in one
short transaction, so several nodes never send one event at once. 2xx → ``delivered``;
anything else, a timeout or a refused connection → retried with the node's backoff, up to
``webhook_max_attempts``, then ``failed``. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import or_, select, update

from mailbot.config import Settings
from mailbot.errors import ConfigError
from mailbot.redact import redact
from mailbot.retry import backoff
from mailbot.status import WebhookStatus
from mailbot.store.db import Sessions
from mailbot.store.models import Comment, WebhookDelivery, utcnow
from mailbot.web import views

log = logging.getLogger(__name__)

BATCH = 20  # rows a pass tries before it looks at the clock again


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def check(settings: Settings) -> None:
    """Refuse to start with webhook URLs and no secret: an unsigned event can be forged."""
    if settings.webhook_urls and settings.webhook_secret is None:
        raise ConfigError(
            "MAILBOT_WEBHOOK_URLS is set without MAILBOT_WEBHOOK_SECRET: events are signed, "
            "set a random secret (and give the app the same one)"
        )
    for url in settings.webhook_urls:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as bad:
            raise ConfigError(f"a webhook URL cannot be read: {bad}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError("a webhook URL must be http:// or https:// with a host")


async def _body(sessions: Sessions, row: WebhookDelivery) -> dict[str, Any]:
    if "message" in row.payload:  # made at an earlier attempt: the same bytes again
        return row.payload
    async with sessions() as session:
        message = await views.inbound_one(session, row.inbound_id) if row.inbound_id else None
        comment: dict[str, Any] | None = None
        if "comment_id" in row.payload:
            found = await session.get(Comment, row.payload["comment_id"])
            if found is not None:
                comment = {
                    "id": found.id,
                    "body": found.body,
                    "created_at": found.created_at.isoformat(),
                }
    body: dict[str, Any] = {
        "id": row.id,
        "event": row.event,
        "created_at": row.created_at.isoformat(),
        "message": message,
    }
    if comment is not None:
        body["comment"] = comment
    return dict(redact(body))


async def deliver_due(sessions: Sessions, settings: Settings, client: httpx.AsyncClient) -> int:
    """Send what is due, one row at a time, each under its own lease: a slow app never makes
    a later row outlive a lease another node could take. How many were tried."""
    tried = 0
    for _ in range(BATCH):
        row = await _lease(sessions, settings)
        if row is None:
            break
        await _attempt(sessions, settings, client, row)
        tried += 1
    return tried


async def _lease(sessions: Sessions, settings: Settings) -> WebhookDelivery | None:
    now = utcnow()
    async with sessions() as session, session.begin():
        row = await session.scalar(
            select(WebhookDelivery)
            .where(
                WebhookDelivery.status == WebhookStatus.queued,
                or_(
                    WebhookDelivery.next_attempt_at.is_(None),
                    WebhookDelivery.next_attempt_at <= now,
                ),
            )
            .order_by(WebhookDelivery.next_attempt_at.is_not(None), WebhookDelivery.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if row is not None:
            row.next_attempt_at = now + _lease_length(settings)
    return row


def _lease_length(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.webhook_timeout * 3 + 30)


async def _attempt(
    sessions: Sessions, settings: Settings, client: httpx.AsyncClient, row: WebhookDelivery
) -> None:
    assert settings.webhook_secret is not None
    lease = row.next_attempt_at
    try:
        payload = await _body(sessions, row)
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        secret = settings.webhook_secret.get_secret_value().encode()
        headers = {
            "content-type": "application/json",
            "user-agent": "mailbot-webhooks",
            "mailbot-event": row.event,
            "mailbot-delivery": str(row.id),
            "mailbot-signature": sign(secret, int(time.time()), body),
        }
        # One bound for the whole exchange: httpx's timeouts are per phase, and an app that
        # trickles its answer must not hold the row past its lease.
        async with asyncio.timeout(settings.webhook_timeout * 2):
            answer = await client.post(row.url, content=body, headers=headers)
        ok, said = 200 <= answer.status_code < 300, f"HTTP {answer.status_code}"
    except TimeoutError:
        payload, ok, said = row.payload, False, "no answer in time"
    except Exception as exc:  # noqa: BLE001 - any failure is this row's, counted, retried
        payload, ok, said = row.payload, False, f"{type(exc).__name__}: {str(exc)[:200]}"
    attempts = row.attempts + 1
    values: dict[str, object] = {"payload": payload, "attempts": attempts, "last_answer": said}
    if ok:
        values |= {"status": WebhookStatus.delivered, "delivered_at": utcnow()}
        values["next_attempt_at"] = None
    elif attempts >= settings.webhook_max_attempts:
        values["status"] = WebhookStatus.failed
        log.warning("webhook %s failed for good: %s", row.id, said)
    else:
        values["next_attempt_at"] = utcnow() + backoff(settings.retry_base_seconds, attempts)
    async with sessions() as session, session.begin():
        # Only while the row is still ours: queued, under the lease this attempt took.
        await session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == row.id,
                WebhookDelivery.status == WebhookStatus.queued,
                WebhookDelivery.next_attempt_at == lease,
            )
            .values(**values)
        )


async def webhook_loop(sessions: Sessions, settings: Settings) -> None:
    """Until cancelled: send what is due, then wait a poll (or less, while there is more)."""
    async with httpx.AsyncClient(timeout=settings.webhook_timeout, follow_redirects=False) as http:
        while True:
            try:
                tried = await deliver_due(sessions, settings, http)
            except Exception:  # noqa: BLE001 - the database may be away: try again later
                log.exception("webhook delivery pass failed; trying again")
                tried = 0
            if tried < BATCH:
                await asyncio.sleep(settings.poll_seconds)
