"""``GET /metrics`` in the Prometheus text format (prometheus-client, the reference client).

Counts come from the database at each scrape, so every node reports the same truth about the
store (messages by status, the outbox by status); the pipeline's latency is what this process
observed (each node is scraped for its own). spamd and the relay are asked at the scrape: one
PING to spamd, one TCP connection to the relay, each bounded by two seconds.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, select
from starlette.responses import Response

from mailbot.config import Settings
from mailbot.pipeline.worker import PIPELINE_SECONDS
from mailbot.spam.client import checker_for
from mailbot.status import InboundStatus, OutboundStatus
from mailbot.store.db import Sessions
from mailbot.store.models import InboundMessage, OutboundMessage

PROBE_SECONDS = 2.0


async def _relay_up(relay: str) -> bool:
    url = urlsplit(relay)
    port = url.port or (465 if url.scheme == "smtps" else 25)
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            _reader, writer = await asyncio.open_connection(url.hostname, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def router(settings: Settings, sessions: Sessions) -> APIRouter:
    registry = CollectorRegistry()
    registry.register(PIPELINE_SECONDS)
    inbound = Gauge(
        "mailbot_inbound_messages", "Inbound messages by status", ["status"], registry=registry
    )
    outbound = Gauge(
        "mailbot_outbound_messages", "Outbound mail by status", ["status"], registry=registry
    )
    checker = checker_for(settings)
    # Only what is configured is reported: no spamd means no mailbot_spamd_up at all.
    spamd_up = Gauge(
        "mailbot_spamd_up",
        "1 if spamd answered PING",
        registry=registry if checker is not None else None,
    )
    relay_up = Gauge(
        "mailbot_relay_up",
        "1 if the relay accepted a connection",
        registry=registry if settings.relay else None,
    )
    api = APIRouter(tags=["health"])

    @api.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        """Messages by status, the outbox by status, pipeline latency, spamd and relay up."""
        async with sessions() as session:
            by_status = dict(
                (
                    await session.execute(
                        select(InboundMessage.status, func.count()).group_by(InboundMessage.status)
                    )
                ).all()
            )
            out_status = dict(
                (
                    await session.execute(
                        select(OutboundMessage.status, func.count()).group_by(
                            OutboundMessage.status
                        )
                    )
                ).all()
            )
        for status in InboundStatus:
            inbound.labels(status.value).set(by_status.get(status, 0))
        for out in OutboundStatus:
            outbound.labels(out.value).set(out_status.get(out, 0))
        if checker is not None:
            try:
                async with asyncio.timeout(PROBE_SECONDS):
                    spamd_up.set(1 if await checker.ping() else 0)
            except TimeoutError:
                spamd_up.set(0)
        if settings.relay:
            relay_up.set(1 if await _relay_up(settings.relay) else 0)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return api
