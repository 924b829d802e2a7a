"""The worker: claims stored messages and runs each through the pipeline.

Woken at once when the SMTP server stores a message, and every ``poll_seconds`` anyway (for
retries that come due, and for rows other nodes stored). Up to ``worker_concurrency``
messages are in flight; a failure in one never stops the loop.
"""

from __future__ import annotations

import asyncio
import logging

from mailbot import pipeline, spam_policy, spool
from mailbot.authenticate import authenticate_row
from mailbot.db import Sessions

log = logging.getLogger(__name__)


async def handle(sessions: Sessions, deps: pipeline.Deps, inbound_id: int) -> None:
    """One message from ``processing`` to a final status (or back to ``pending``)."""
    failure: Exception | None = None
    try:
        raw = await spool.load_raw(sessions, inbound_id)
        # All wait on something else (the analyser pool, spamd, DNS), so they overlap. A task
        # group, not gather: if one fails, the others are cancelled and awaited, never left
        # running on their own (a spam scan outliving its message, or its node).
        async with asyncio.TaskGroup() as group:
            analysing = group.create_task(deps.analyse(raw))
            group.create_task(spam_policy.scan_row(sessions, deps.spam, inbound_id, raw))
            group.create_task(authenticate_row(sessions, deps.settings, inbound_id, raw))
        analysis = analysing.result()
    except* Exception as failures:
        failure = failures.exceptions[0]
    if failure is not None:  # recorded on the row, retried with backoff
        await spool.record_failure(sessions, deps.settings, inbound_id, failure)
        return
    async with spool.processing(sessions, deps.settings, inbound_id) as (session, row):
        await pipeline.run(session, row, analysis, deps)


async def run(
    sessions: Sessions,
    deps: pipeline.Deps,
    wake: asyncio.Event,
    on_done: asyncio.Event | None = None,
) -> None:
    limit = max(1, deps.settings.worker_concurrency)
    while True:
        wake.clear()
        try:
            ids = await spool.claim(sessions, limit)
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
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        # that arrives as the event is set, and the node then never stops.
        try:
            async with asyncio.timeout(deps.settings.poll_seconds):
                await wake.wait()
        except TimeoutError:
            pass
