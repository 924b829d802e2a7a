"""Phase 2 for several messages at once: whatever finished phase 1 meanwhile goes into one
transaction (:func:`mailbot.store.finish.together`), with one commit, one fsync on SQLite,
for all of them.

A batch never waits to fill up: a message that is ready alone goes alone, at once (in a
transaction of its own, :func:`mailbot.store.finish.processing`: no savepoint); the ones
that become ready while a batch is in its transaction form the next. One batch at a time, in
the order the messages were handed in: on SQLite one transaction writes at a time anyway, and
a message is in line the moment it is handed in, so the next mail of the same sender to the
same address (mailbot/pipeline/turns.py) may follow it into the same batch. If a batch cannot
be committed, each of its messages is done again in a transaction of its own, in order, so
that one cannot keep the others back for good. On SQLite a batch also ends early when the
SMTP server waits to commit mail it is to say 250 for; what it had not begun goes next.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from mailbot.config import Settings
from mailbot.store import finish
from mailbot.store.db import Sessions
from mailbot.store.models import InboundMessage

log = logging.getLogger(__name__)

MOST = 32  # messages in one transaction: bounds how long it holds the writer


@dataclass
class _Waiting:
    inbound_id: int
    work: finish.Work
    ended: asyncio.Future[InboundMessage | Exception]


class Batches:
    """Hands the work of each message to the next batch; :meth:`run` does the batches."""

    def __init__(self, sessions: Sessions, settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings
        self._waiting: list[_Waiting] = []
        self._ready = asyncio.Event()

    async def finish(
        self, inbound_id: int, work: finish.Work, queued: Callable[[], None] | None = None
    ) -> InboundMessage | Exception:
        """The message's row as committed, or the :class:`~mailbot.store.spool.ClaimLost`
        or :class:`LookupError` that kept it from being worked on. Raises what kept its
        transaction from committing, even on its own. ``queued`` is called once it is in
        line: what is handed in later is worked on after it."""
        ended: asyncio.Future[InboundMessage | Exception] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting.append(_Waiting(inbound_id, work, ended))
        self._ready.set()
        if queued is not None:
            queued()
        return await ended

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            batch, self._waiting = self._waiting[:MOST], self._waiting[MOST:]
            if not self._waiting:
                self._ready.clear()
            batch = [waiting for waiting in batch if not waiting.ended.done()]  # cancelled
            if batch:
                await self._together(batch)

    async def _together(self, batch: list[_Waiting]) -> None:
        if len(batch) == 1:  # mail arriving one at a time: no savepoint to pay for
            await self._alone(batch[0])
            return
        works = [(waiting.inbound_id, waiting.work) for waiting in batch]
        try:
            ended = await finish.together(self._sessions, self._settings, works)
        except Exception as failure:  # noqa: BLE001 - each is tried again on its own
            log.warning("a batch of %d could not commit (%r); one by one", len(batch), failure)
            for waiting in batch:
                await self._alone(waiting)
            return
        for waiting, result in zip(batch, ended, strict=False):
            _settle(waiting, result)
        if len(ended) < len(batch):  # the SMTP server wanted the writer: the rest go next
            self._waiting[:0] = batch[len(ended) :]
            self._ready.set()

    async def _alone(self, waiting: _Waiting) -> None:
        """One message in a transaction of its own."""
        try:
            async with finish.processing(self._sessions, self._settings, waiting.inbound_id) as (
                session,
                row,
            ):
                await waiting.work(session, row)
        except Exception as failure:  # noqa: BLE001 - its handler reports it
            _fail(waiting, failure)
            return
        _settle(waiting, row)


def _settle(waiting: _Waiting, result: InboundMessage | Exception) -> None:
    if not waiting.ended.done():  # a handler gone meanwhile is not told
        waiting.ended.set_result(result)


def _fail(waiting: _Waiting, failure: Exception) -> None:
    if not waiting.ended.done():
        waiting.ended.set_exception(failure)
