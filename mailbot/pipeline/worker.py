"""The worker: claims stored messages and runs each through the stages (:mod:`.stages`).

Woken at once when the SMTP server stores a message, and every ``poll_seconds`` anyway (for
retries that come due, and for rows other nodes stored). Up to ``worker_concurrency``
messages are in flight; a failure in one never stops the loop. Mail from one sender to one
address reaches the bot in the order it arrived (:mod:`.turns`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from prometheus_client import Histogram
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot.errors import Rejection
from mailbot.pipeline import stages
from mailbot.pipeline.batches import Batches
from mailbot.pipeline.memory import trim
from mailbot.pipeline.turns import Turn, Turns
from mailbot.status import FINAL_INBOUND
from mailbot.store import finish, spool
from mailbot.store.db import Sessions
from mailbot.store.models import InboundMessage, utcnow

log = logging.getLogger(__name__)

BIG_MESSAGE = 1024 * 1024
# Accepted (250) to its final status, as this process saw it; served by mailbot/web/metrics.py.
PIPELINE_SECONDS = Histogram(
    "mailbot_pipeline_seconds",
    "Seconds from the 250 to the final status, by status",
    ["status"],
    buckets=(0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 300),
    registry=None,  # registered by the web side's own registry, not the global one
)


async def handle(
    sessions: Sessions,
    deps: stages.Deps,
    inbound_id: int,
    batches: Batches | None = None,
    turn: Turn | None = None,
) -> None:
    """One message from ``processing`` to a final status (or back to ``pending``).
    ``batches``: where its phase 2 joins others ready at the same time (see :func:`run`;
    None: in a transaction of its own); ``turn``: its place in line behind earlier mail of
    the same sender to the same address."""
    try:
        async with spool.leased(sessions, deps.settings, inbound_id):
            try:
                size = await _handle(sessions, deps, inbound_id, batches, turn)
            except spool.ClaimLost as lost:
                log.warning("%s; leaving it to its new owner", lost)
                return
    finally:
        if turn is not None:
            turn.done()
    if size >= BIG_MESSAGE:
        await asyncio.to_thread(trim)  # its copies are freed: give the memory back now


async def _handle(
    sessions: Sessions,
    deps: stages.Deps,
    inbound_id: int,
    batches: Batches | None,
    turn: Turn | None,
) -> int:
    """The work on one message; returns its size."""
    size = 0
    try:
        loaded = await stages.load(sessions, deps, inbound_id)
        raw, envelope = loaded.raw, loaded.envelope
        size = raw.size
        read: stages.Read | Rejection = await stages.read(sessions, deps, inbound_id, loaded)
    except Rejection as refusal:  # hostile or over a limit: refused once, never retried
        read = refusal
    except Exception as failure:  # noqa: BLE001 - recorded on the row, retried with backoff
        await finish.record_failure(sessions, deps.settings, inbound_id, failure)
        return size
    if turn is not None:
        await turn.wait()  # never from inside a batch: the earlier one may be in the next

    async def work(session: AsyncSession, row: InboundMessage) -> None:
        if isinstance(read, Rejection):
            raise read
        await stages.act(session, row, read, deps)

    if batches is None:
        async with finish.processing(sessions, deps.settings, inbound_id) as (session, row):
            await work(session, row)
    else:
        ended = await batches.finish(inbound_id, work, turn.done if turn else None)
        if isinstance(ended, Exception):
            raise ended
        row = ended
    # Read without loading: after a rollback (a retry) the row's attributes are expired.
    state = inspect(row).dict
    status, received = state.get("status"), state.get("received_at")
    if status in FINAL_INBOUND and received is not None:
        waited = (utcnow() - received).total_seconds()
        PIPELINE_SECONDS.labels(status.value).observe(max(waited, 0.0))
        # One line a message, for the operator (mailbot/logs.py redacts the reply address).
        why = state.get("reason") or (f"bot {state['bot']}" if state.get("bot") else "")
        log.info(
            "inbound %s %s in %.0f ms: from %s to %s%s",
            inbound_id,
            status.value,
            waited * 1000,
            envelope.mail_from or "<>",
            ", ".join(envelope.rcpt_tos),
            f" ({why})" if why else "",
            extra={
                "inbound": inbound_id,
                "status": status.value,
                "ms": round(waited * 1000, 1),
                "bot": state.get("bot"),
            },
        )
    return size


async def run(
    sessions: Sessions,
    deps: stages.Deps,
    wake: asyncio.Event,
    on_done: Callable[[], None] | None = None,
) -> None:
    """Keep up to ``worker_concurrency`` messages in flight. A pool, not batches: a slot
    freed by a fast message is filled at once, whatever the slow ones beside it are doing.
    Claims are batched: the pool claims again when a quarter of it is free, or when idle.

    Phase 2 is batched (:mod:`.batches`): the messages whose phase 1 ended while the last
    transaction was open share the next one, one batch at a time. On SQLite one transaction
    writes at a time (queued for the one writer, several would each hold a place ahead of the
    SMTP server's next group commit, and every 250 would wait for all of them); on PostgreSQL
    more nodes are what works on more at once."""
    limit = max(1, deps.settings.worker_concurrency)
    batches = Batches(sessions, deps.settings)
    finisher = asyncio.create_task(batches.run())
    refill = max(1, limit // 4)
    turns = Turns()
    lease = timedelta(seconds=deps.settings.lease_seconds)
    flying: dict[asyncio.Task[Any], int] = {}
    woken: asyncio.Task[Any] = asyncio.create_task(wake.wait())
    try:
        while True:
            free = limit - len(flying)
            if free >= refill or not flying:
                wake.clear()
                in_hand = set(flying.values())
                for claimed in await _claim(sessions, free, lease):
                    if claimed.id in in_hand:  # its lease ran out while still in our hands
                        continue
                    turn = turns.take(claimed.mail_from, claimed.rcpt_tos)
                    task = asyncio.create_task(handle(sessions, deps, claimed.id, batches, turn))
                    flying[task] = claimed.id
                if woken.done():
                    woken = asyncio.create_task(wake.wait())
            # Once woken while full, the wake stays set until the next claim: no spinning.
            waits = [*flying] if woken.done() else [*flying, woken]
            done, _ = await asyncio.wait(
                waits, timeout=deps.settings.poll_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            finished = [task for task in done if task in flying]
            for task in finished:
                _report(flying.pop(task), task)
            if finished and on_done is not None:
                on_done()
    finally:
        woken.cancel()
        for task in flying:
            task.cancel()
        await asyncio.gather(*flying, woken, return_exceptions=True)
        finisher.cancel()  # after the handlers: none is left waiting on it
        await asyncio.gather(finisher, return_exceptions=True)


async def _claim(sessions: Sessions, limit: int, lease: timedelta) -> list[spool.Claimed]:
    try:
        return await spool.claim(sessions, limit, lease)
    except Exception:  # noqa: BLE001 - database down: keep trying, the rows are safe
        log.exception("claiming inbound messages failed; retrying")
        return []


def _report(inbound_id: int, task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("inbound %s: %r (will be retried after the lease)", inbound_id, error)
