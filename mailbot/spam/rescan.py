"""Mail accepted while spamd was down waits as ``unscanned``; this loop sends it back.

Every ``spamd_recheck_seconds`` (only while such mail exists) spamd is pinged; once it
answers, every unscanned message goes back to ``pending``, so the worker scans it and only
then dispatches it. Nothing unscanned reaches a bot, and nothing waits forever once spamd is
back.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select

from mailbot.spam.client import SpamChecker
from mailbot.store import spool
from mailbot.store.db import Sessions
from mailbot.store.models import InboundMessage, InboundStatus

log = logging.getLogger(__name__)


async def rescan_once(sessions: Sessions, checker: SpamChecker) -> int:
    """Requeue unscanned mail if spamd answers; how many messages went back."""
    async with sessions() as session:
        ids = list(
            await session.scalars(
                select(InboundMessage.id).where(InboundMessage.status == InboundStatus.unscanned)
            )
        )
    if not ids or not await checker.ping():
        return 0
    count = await spool.requeue(sessions, ids)
    log.info("spamd answers again: %s unscanned message(s) go through the pipeline", count)
    return count


async def rescan_loop(
    sessions: Sessions, checker: SpamChecker, wake_worker: asyncio.Event, every: float
) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            if await rescan_once(sessions, checker):
                wake_worker.set()
        except Exception:  # noqa: BLE001 - database down: the rows are safe, try again later
            log.exception("looking for unscanned mail failed; trying again")
