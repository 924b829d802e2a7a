"""The worker: claims stored messages and runs each through the stages (:mod:`.stages`).

Woken at once when the SMTP server stores a message, and every ``poll_seconds`` anyway (for
retries that come due, and for rows other nodes stored). Up to ``worker_concurrency``
messages are in flight; a failure in one never stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from mailbot.errors import Rejection
from mailbot.pipeline import stages
from mailbot.pipeline.memory import trim
from mailbot.retry import wait_for_work
from mailbot.store import spool
from mailbot.store.db import Sessions

log = logging.getLogger(__name__)

BIG_MESSAGE = 1024 * 1024


async def handle(sessions: Sessions, deps: stages.Deps, inbound_id: int) -> None:
    """One message from ``processing`` to a final status (or back to ``pending``)."""
    async with spool.leased(sessions, deps.settings, inbound_id):
        try:
            size = await _handle(sessions, deps, inbound_id)
        except spool.ClaimLost as lost:
            log.warning("%s; leaving it to its new owner", lost)
            return
    if size >= BIG_MESSAGE:
        await asyncio.to_thread(trim)  # its copies are freed: give the memory back now


async def _handle(sessions: Sessions, deps: stages.Deps, inbound_id: int) -> int:
    """The work on one message; returns its size."""
    raw = b""
    try:
        raw, envelope = await spool.load(sessions, inbound_id)
        read: stages.Read | Rejection = await stages.read(sessions, deps, inbound_id, raw, envelope)
    except Rejection as refusal:  # hostile or over a limit: refused once, never retried
        read = refusal
    except Exception as failure:  # noqa: BLE001 - recorded on the row, retried with backoff
        await spool.record_failure(sessions, deps.settings, inbound_id, failure)
        return len(raw)
    async with spool.processing(sessions, deps.settings, inbound_id) as (session, row):
        if isinstance(read, Rejection):
            raise read
        await stages.act(session, row, read, deps)
    return len(raw)


async def run(
    sessions: Sessions,
    deps: stages.Deps,
    wake: asyncio.Event,
    on_done: asyncio.Event | None = None,
) -> None:
    limit = max(1, deps.settings.worker_concurrency)
    while True:
        wake.clear()
        try:
            lease = timedelta(seconds=deps.settings.lease_seconds)
            ids = await spool.claim(sessions, limit, lease)
        except Exception:  # noqa: BLE001 - database down: keep trying, the rows are safe
            log.exception("claiming inbound messages failed; retrying")
            ids = []
        if ids:
            results = await asyncio.gather(
                *(handle(sessions, deps, i) for i in ids), return_exceptions=True
            )
            for inbound_id, result in zip(ids, results, strict=True):
                if isinstance(result, Exception):
                    log.error(
                        "inbound %s: %r (will be retried after the lease)", inbound_id, result
                    )
            if on_done is not None:
                on_done.set()
            continue
        await wait_for_work(wake, deps.settings.poll_seconds)
