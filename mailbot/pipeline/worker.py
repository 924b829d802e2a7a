"""The worker: claims stored messages and runs each through the pipeline.

Woken at once when the SMTP server stores a message, and every ``poll_seconds`` anyway (for
retries that come due, and for rows other nodes stored). Up to ``worker_concurrency``
messages are in flight; a failure in one never stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from mailbot.errors import Rejection
from mailbot.pipeline import stages as pipeline
from mailbot.pipeline.memory import trim
from mailbot.retry import wait_for_work
from mailbot.spam import policy as spam_policy
from mailbot.store import spool
from mailbot.store.db import Sessions
from mailbot.trust.authenticate import Authentication, check_sender, from_domains_of, judge_from
from mailbot.trust.resolver import resolver_for

log = logging.getLogger(__name__)

BIG_MESSAGE = 1024 * 1024


async def handle(sessions: Sessions, deps: pipeline.Deps, inbound_id: int) -> None:
    """One message from ``processing`` to a final status (or back to ``pending``)."""
    async with spool.leased(sessions, deps.settings, inbound_id):
        try:
            size = await _handle(sessions, deps, inbound_id)
        except spool.ClaimLost as lost:
            log.warning("%s; leaving it to its new owner", lost)
            return
    if size >= BIG_MESSAGE:
        await asyncio.to_thread(trim)  # its copies are freed: give the memory back now


async def _handle(sessions: Sessions, deps: pipeline.Deps, inbound_id: int) -> int:
    """The work on one message; returns its size."""
    raw = b""
    failure: Exception | None = None
    refusal: Rejection | None = None
    auth: Authentication | None = None
    try:
        raw, envelope = await spool.load(sessions, inbound_id)
        resolver = resolver_for(deps.settings)
        # All wait on something else (an analyser process, spamd, DNS), so they overlap. A
        # task group, not gather: if one fails, the others are cancelled and awaited, never
        # left running on their own (a spam scan outliving its message, or its node).
        async with asyncio.TaskGroup() as group:
            analysing = group.create_task(deps.analyse(raw))
            group.create_task(spam_policy.scan_row(sessions, deps.spam, inbound_id, raw))
            checking = group.create_task(
                asyncio.to_thread(
                    check_sender,
                    raw,
                    client_ip=envelope.client_ip,
                    helo=envelope.helo,
                    mail_from=envelope.mail_from,
                    resolver=resolver,
                    smtp_auth=envelope.auth_user,
                )
            )
        analysis = analysing.result()
        # DMARC needs the From, which only the analyser has read (never this event loop).
        auth = await asyncio.to_thread(
            judge_from,
            checking.result(),
            from_domains_of(analysis.parsed),
            resolver,
            deps.settings.hostname,
            envelope.mail_from,
        )
    except* Rejection as refused:  # hostile or over a limit: refused once, never retried
        refusal = refused.exceptions[0]  # type: ignore[assignment]
    except* Exception as failures:
        failure = failures.exceptions[0]
    if failure is not None:  # recorded on the row, retried with backoff
        await spool.record_failure(sessions, deps.settings, inbound_id, failure)
        return len(raw)
    async with spool.processing(sessions, deps.settings, inbound_id) as (session, row):
        if refusal is not None:
            raise refusal
        assert auth is not None
        row.authentication = auth.to_json()
        await pipeline.run(session, row, analysis, deps)
    return len(raw)


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
