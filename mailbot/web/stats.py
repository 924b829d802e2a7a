"""``GET /api/stats``: what the page's charts draw. Mail per hour by status, the spam rate
and accept → final latency, over the last ``hours`` (1 to 168).

Read from the inbound rows of that window (at most :data:`MAX_ROWS`, newest first; the answer
says when it was cut) and counted here, which reads the same on SQLite and PostgreSQL.
Latency is ``updated_at - received_at`` of a final row: when it got its status.
"""

from __future__ import annotations

import statistics
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from mailbot.status import FINAL_INBOUND
from mailbot.store.db import Sessions
from mailbot.store.models import InboundMessage, utcnow
from mailbot.web import shapes

MAX_ROWS = 50_000


def _hour(moment: Any) -> str:
    return str(moment.replace(minute=0, second=0, microsecond=0).isoformat())


def summarise(rows: list[Any], hours: int, now: Any) -> dict[str, Any]:
    start = now - timedelta(hours=hours)
    slots: dict[str, dict[str, Any]] = {}
    for n in range(hours, -1, -1):
        key = _hour(now - timedelta(hours=n))
        slots[key] = {"hour": key, "by_status": {}, "scanned": 0, "spam": 0, "latency_ms": []}
    for received, updated, status, spam in rows:
        slot = slots.get(_hour(received))
        if slot is None or received < start:
            continue
        slot["by_status"][status.value] = slot["by_status"].get(status.value, 0) + 1
        if spam and spam.get("scanned"):
            slot["scanned"] += 1
            # spamd's own verdict: at or over its required score (whatever was done with it).
            slot["spam"] += spam.get("score", 0) >= spam.get("threshold", float("inf"))
        if status in FINAL_INBOUND:
            slot["latency_ms"].append((updated - received).total_seconds() * 1000)
    series = []
    for slot in slots.values():
        waited = sorted(slot.pop("latency_ms"))
        slot["latency_p50_ms"] = round(statistics.median(waited), 1) if waited else None
        slot["latency_p95_ms"] = round(waited[int(len(waited) * 0.95)], 1) if waited else None
        slot["spam_rate"] = round(slot["spam"] / slot["scanned"], 3) if slot["scanned"] else None
        series.append(slot)
    return {"hours": series}


def router(sessions: Sessions) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["messages"])

    @api.get("/stats", response_model=shapes.Stats, response_model_exclude_unset=True)
    async def stats(hours: Annotated[int, Query(ge=1, le=168)] = 24) -> Any:
        """Mail per hour by status, spam rate and latency, for the page's charts."""
        now = utcnow()
        async with sessions() as session:
            rows = (
                await session.execute(
                    select(
                        InboundMessage.received_at,
                        InboundMessage.updated_at,
                        InboundMessage.status,
                        InboundMessage.spam,
                    )
                    .where(InboundMessage.received_at >= now - timedelta(hours=hours))
                    .order_by(InboundMessage.id.desc())
                    .limit(MAX_ROWS)
                )
            ).all()
        answer = summarise([tuple(r) for r in rows], hours, now)
        answer["cut"] = len(rows) >= MAX_ROWS
        return answer

    return api
