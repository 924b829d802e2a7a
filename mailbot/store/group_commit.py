"""Durable acceptance at the rate of the disk's fsyncs, not one fsync per message.

Every sender gets 250 only after its row is committed; messages that arrive while a commit
is under way wait for the next one, and share it (group commit, as databases do with their
own logs). At low load a message is committed at once: nothing waits for a timer. At high
load one transaction and one fsync take up to ``max_batch`` rows.

A batch whose commit fails is retried a row at a time, so a row the database refuses costs
only its own sender a 451, not everyone who arrived with it; when the database itself is
away, every sender of the batch gets its 451 at once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from mailbot.config import Settings
from mailbot.store import notify, spool, sqlite_driver
from mailbot.store.blobs import BlobStore, put_if_large
from mailbot.store.db import OpenSession

log = logging.getLogger(__name__)

# Failures of the database itself, not of one row: retrying the batch a row at a time would
# make the last sender wait once per row before its 451.
_DATABASE_AWAY = (OperationalError, InterfaceError, PoolTimeout, TimeoutError, ConnectionError)

# Rows at or over this size are hashed and read off the event loop.
BIG_ROW = 256 * 1024


@dataclass
class _Waiting:
    raw: bytes
    envelope: spool.Envelope
    spam: dict[str, Any] | None
    raw_blob: str | None  # its key in the blob store, when it is kept there
    done: asyncio.Future[int]


class GroupCommit:
    """Commits rows for :func:`store` callers, many to a transaction.

    Use as ``async with GroupCommit(sessions) as commits: await commits.store(...)``.
    """

    def __init__(
        self,
        sessions: OpenSession,
        *,
        max_batch: int = 200,
        blobs: BlobStore | None = None,
        blob_threshold: int = Settings.model_fields["blob_threshold"].default,
    ):
        self.sessions = sessions
        self.blobs = blobs  # big raw mail goes here, durable before its row commits
        self.blob_threshold = blob_threshold
        self.max_batch = max(1, max_batch)
        self._waiting: list[_Waiting] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.commits = 0  # transactions committed (for tests and benchmarks)

    async def __aenter__(self) -> GroupCommit:
        self._task = asyncio.create_task(self._run(), name="group-commit")
        return self

    async def __aexit__(self, *exc: object) -> None:
        # What arrived last is committed on the way out, not dropped: no 250 is lost.
        assert self._task is not None
        self._closing = True
        self._wake.set()
        await self._task

    async def store(
        self, raw: bytes, envelope: spool.Envelope, spam: dict[str, Any] | None = None
    ) -> int:
        """The id of the committed row; raises if it could not be committed."""
        # Each sender writes its own blob (fsynced) before it queues: a big message never
        # holds up the small ones committed with it.
        key = await put_if_large(self.blobs, raw, self.blob_threshold)
        done = asyncio.get_running_loop().create_future()
        waiting = _Waiting(raw, envelope, spam, key, done)
        if self._task is None or self._task.done():  # not started, or closed: on its own
            await self._commit([waiting])
            return await waiting.done
        self._waiting.append(waiting)
        self._wake.set()
        # A sender that hangs up meanwhile cancels only its wait; the row still commits (it
        # never saw 250, so it sends again, and duplicates.py knows the Message-ID).
        return await waiting.done

    def _take(self) -> list[_Waiting]:
        batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
        return batch

    async def _run(self) -> None:
        while not (self._closing and not self._waiting):
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                await self._commit(self._take())

    async def _commit(self, batch: list[_Waiting]) -> None:
        # Senders wait on this one: on SQLite it goes before the worker's next transaction.
        urgent = sqlite_driver.urgent.set(True)
        burst = sqlite_driver.burst.set(len(batch) > 1)  # more are on their way
        try:
            await self._commit_urgently(batch)
        finally:
            sqlite_driver.burst.reset(burst)
            sqlite_driver.urgent.reset(urgent)

    async def _commit_urgently(self, batch: list[_Waiting]) -> None:
        try:
            rows = [await _values(item) for item in batch]
            async with self.sessions() as session, session.begin():
                ids = await spool.insert_rows(session, rows)
                await notify.announce(session)  # workers on other nodes, at commit
            self.commits += 1
        except asyncio.CancelledError:
            # Committed or not, nobody can say now: 451, and the sender's retry is caught by
            # its Message-ID if the first copy did commit.
            for item in batch:
                _answer(item.done, ConnectionAbortedError("stopped during a group commit"))
            raise
        except Exception as exc:  # noqa: BLE001 - each sender is answered, none left waiting
            if len(batch) > 1 and not isinstance(exc, _DATABASE_AWAY):
                log.warning("a group commit of %s rows failed (%r); one at a time", len(batch), exc)
                for item in batch:
                    await self._commit_urgently([item])
                return
            for item in batch:  # the database is away: one at a time would wait N times
                _answer(item.done, exc)
            return
        for item, inbound_id in zip(batch, ids, strict=True):
            _answer(item.done, inbound_id)


async def _values(item: _Waiting) -> dict[str, Any]:
    row = (item.raw, item.envelope, item.spam, item.raw_blob)
    if item.raw_blob is None and len(item.raw) >= BIG_ROW:  # a blob's key is its hash already
        return await asyncio.to_thread(spool.new_values, *row)
    return spool.new_values(*row)


def _answer(done: asyncio.Future[int], result: int | BaseException) -> None:
    if done.done():  # the sender hung up
        return
    if isinstance(result, BaseException):
        done.set_exception(result)
    else:
        done.set_result(result)
