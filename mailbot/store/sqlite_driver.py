"""aiosqlite with at most one thread hop per statement, for SQLAlchemy's ``sqlite+aiosqlite``.

aiosqlite runs every call on its connection's thread, and SQLAlchemy's adapter makes four
calls per statement (open a cursor, execute, fetch all, close), each a round trip through a
queue, a thread wake-up and the event loop's self-pipe. Profiled under load, those round
trips were a third of the main process's time. Here a statement is one round trip:

- :class:`Cursor` does the four on the connection's thread in one call, and hands back the
  rows, the description and the counts;
- a ``BEGIN`` waits and goes with the transaction's first statement;
- ``commit()`` and ``rollback()`` with no transaction open (the pool's reset of every
  connection it gets back, a read that never began one) are answered here, not on the thread,
  and so is the rollback that ends a transaction that only read;
- the statements of a write transaction run on the caller's thread (:func:`_small`), the
  first with its ``BEGIN`` too when the writer lock is free (:func:`_began_here`); one that
  waits for the lock, and the ``COMMIT`` (an fsync), hop;
- a write transaction (``BEGIN IMMEDIATE``) first takes :class:`WriterLock`, a lock file
  beside the database, so that writers in other processes (the SMTP server and the worker
  in its own process) queue and wake the moment the last one commits, where SQLite's busy
  handler sleeps up to 100 ms between tries;
- a writer a sender waits on (:data:`urgent`: the SMTP server's group commit, whose senders
  wait for their 250) goes first: the others let it by when they would start, and a long one
  (the worker's batch) can ask :meth:`WriterLock.wanted` and end early; after it committed a
  burst's rows (:data:`burst`), the others also stay out a moment, for the next commit.

Everything else (the thread, the queue, close, errors) is aiosqlite's own. :func:`connector`
is what ``create_async_engine(..., async_creator=...)`` takes.
"""

from __future__ import annotations

import fcntl
import os
import re
import sqlite3
import struct
import time
from collections.abc import Callable, Coroutine, Sequence
from contextvars import ContextVar
from functools import partial
from typing import Any

import aiosqlite

Row = tuple[Any, ...]
Description = tuple[tuple[Any, ...], ...] | None

# Set by a writer that senders wait on (mailbot/store/group_commit.py): its transactions go
# before any other that has not begun.
urgent: ContextVar[bool] = ContextVar("urgent", default=False)
# How long a writer nobody waits on lets urgent ones by before it takes its turn anyway: the
# worker is slowed by a burst of mail, never stopped.
POLITE_SECONDS = 0.1
# Set with ``urgent`` when the commit holds several senders' rows: mail is arriving faster than
# one commit at a time, so another will want the writer in a moment. For BURST_SECONDS after
# such a commit the others stay out, as if it waited (up to POLITE_SECONDS): between the
# commits of a burst a worker's transaction would make the next one wait for all of it. A
# commit of one row (mail arriving one at a time) leaves no mark: the worker goes at once.
burst: ContextVar[bool] = ContextVar("burst", default=False)
BURST_SECONDS = 0.005
_MARK = struct.Struct("dq")  # when, by which process


class Cursor:
    """The part of an aiosqlite cursor SQLAlchemy uses; the statement and its rows in one hop."""

    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.description: Description = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Row] = []

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> Cursor:
        if _BEGIN.match(sql) and not self._connection.in_transaction:
            self._connection.begin = sql  # sent with the first statement
            return self
        return await self._run(sql, () if parameters is None else parameters, many=False)

    async def executemany(self, sql: str, parameters: Sequence[Sequence[Any]]) -> Cursor:
        return await self._run(sql, parameters, many=True)

    async def _run(self, sql: str, parameters: Any, *, many: bool) -> Cursor:
        connection = self._connection
        begin, connection.begin = connection.begin, None
        lock = connection.lock
        try:
            if (
                lock is not None
                and _small(parameters, many)
                and (lock.held if begin is None else _began_here(connection._conn, lock, begin))
            ):
                done = _execute(connection._conn, lock, None, sql, parameters, many)
            else:
                done = await connection._execute(  # type: ignore[no-untyped-call]
                    _execute, connection._conn, lock, begin, sql, parameters, many, urgent.get()
                )
        except BaseException:
            connection.in_transaction = True  # not known: the next rollback is really sent
            connection.settled = False  # and after what may still run on the thread
            raise
        self.description, self.rowcount, self.lastrowid, self._rows, open_ = done
        connection.in_transaction = open_
        return self

    async def fetchone(self) -> Row | None:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Row]:
        size = size or self.arraysize
        taken, self._rows = self._rows[:size], self._rows[size:]
        return taken

    async def fetchall(self) -> list[Row]:
        taken, self._rows = self._rows, []
        return taken

    async def close(self) -> None:
        self._rows = []


INLINE_BYTES = 64 * 1024


def _began_here(conn: sqlite3.Connection, lock: WriterLock, begin: str) -> bool:
    """Begin a write transaction on the caller's thread when the writer lock is free this
    moment (nobody to wait for: a hop would only cost the wait for the event loop's next
    turn, 2 to 3 ms on the SMTP server's busy loop). SQLite is told not to wait either: a
    writer outside mailbot (a ``sqlite3`` shell) holding the file must not stop the loop,
    and the transaction then begins on the connection's thread, as any other."""
    if not _WRITE_BEGIN.match(begin) or not lock.try_take(urgent.get()):
        return False
    try:
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute(begin)
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(lock.timeout * 1000)}")
    except sqlite3.OperationalError:
        if conn.in_transaction:
            conn.rollback()
        lock.release()
        return False
    return True


def _small(parameters: Any, many: bool) -> bool:
    """Whether a statement of a write transaction that holds the lock runs on the caller's
    thread: it can wait for no lock (the transaction has the database's), and a hop to the
    connection's thread (0.1 to 0.5 ms, more on a busy loop) costs more than a small
    statement (tens of µs). Several rows at once, or big values, still go to the thread."""
    if many:
        return False
    values = parameters.values() if isinstance(parameters, dict) else parameters
    # In all, not each: one INSERT of many rows' values is one statement too.
    return sum(len(v) for v in values if isinstance(v, str | bytes)) <= INLINE_BYTES


_BEGIN = re.compile(r"\s*BEGIN\b", re.IGNORECASE)
_WRITE_BEGIN = re.compile(r"\s*BEGIN\s+(IMMEDIATE|EXCLUSIVE)\b", re.IGNORECASE)


class WriterLock:
    """``flock`` on ``<database>-writer``, held from a write transaction's BEGIN to its end.

    Only this module's connections take it, so it queues mailbot's own writers; SQLite's lock
    still guards the file against anything else. Waiting polls every 50 to 500 µs: a freed
    lock is taken within half a millisecond, at a cost of a few syscalls per millisecond of
    wait, never a sleep of 100 ms. Gone with its process, however that process ends. Used
    on the connection's own thread, and by the transaction's owner while it holds it.

    An urgent writer holds a shared ``flock`` on ``<database>-writer-wanted`` while it waits:
    the others see it (:meth:`wanted`) and let it go first, for up to ``POLITE_SECONDS``."""

    def __init__(self, path: str, timeout: float) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._wanted = os.open(f"{path}-wanted", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.timeout = timeout
        self.held = False

    def take(self, urgent: bool = False) -> None:
        if not urgent:
            self._take(polite_until=time.monotonic() + POLITE_SECONDS)
            return
        fcntl.flock(self._wanted, fcntl.LOCK_SH)  # shared: urgent writers queue as before
        try:
            self._take(polite_until=0.0)
        finally:
            fcntl.flock(self._wanted, fcntl.LOCK_UN)

    def _take(self, polite_until: float) -> None:
        wait, now = 0.00005, time.monotonic()
        deadline = now + self.timeout
        # Until polite_until, an urgent writer that waits goes first.
        while not self.try_take(urgent=now >= polite_until):
            if now > deadline:  # as SQLite's busy timeout would say it
                raise sqlite3.OperationalError("database is locked")
            time.sleep(wait)
            wait = min(wait * 2, 0.0005)
            now = time.monotonic()

    def try_take(self, urgent: bool = False) -> bool:
        """Take it if it is free and no urgent writer waits, nor committed a burst's rows a
        moment ago (unless this one is urgent)."""
        if not urgent and (self.wanted() or self.in_burst()):
            return False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.held = True
        return True

    def wanted(self) -> bool:
        """Whether an urgent writer waits (a probe: it cannot take the flag's lock whole;
        another writer's probe at the same instant reads as waiting, which costs one poll)."""
        try:
            fcntl.flock(self._wanted, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._wanted, fcntl.LOCK_UN)
        return False

    def note_burst(self) -> None:
        """Mark, for the other processes, that an urgent writer committed a burst's rows now."""
        os.pwrite(self._wanted, _MARK.pack(time.monotonic(), os.getpid()), 0)

    def in_burst(self) -> bool:
        """Whether another process marked a burst within ``BURST_SECONDS``. Its own marks
        count for nothing: in one process the writers share one connection, and one that
        waited would hold it from the very commit it waits for. The clock is the machine's
        monotonic one, the same in every process; a mark from before a reboot reads as the
        future, and counts for nothing too."""
        mark = os.pread(self._wanted, _MARK.size, 0)
        if len(mark) != _MARK.size:
            return False
        at, pid = _MARK.unpack(mark)
        ago: float = time.monotonic() - at
        return pid != os.getpid() and 0.0 <= ago < BURST_SECONDS

    def release(self) -> None:
        if self.held:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self.held = False

    def close(self) -> None:
        self.release()
        os.close(self._fd)
        os.close(self._wanted)


def _execute(
    conn: sqlite3.Connection,
    lock: WriterLock | None,
    begin: str | None,
    sql: str,
    parameters: Any,
    many: bool,
    urgent: bool = False,
) -> tuple[Any, ...]:
    # On the connection's thread: the waiting BEGIN, then the whole statement, read to the end.
    cursor = conn.cursor()
    try:
        if begin is not None:
            if lock is not None and not lock.held and _WRITE_BEGIN.match(begin):
                lock.take(urgent)
            cursor.execute(begin)
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows, conn.in_transaction
    finally:
        cursor.close()
        if lock is not None and not conn.in_transaction:
            lock.release()  # the transaction ended (or never began): the next writer goes


def _ended(
    conn: sqlite3.Connection,
    lock: WriterLock | None,
    end: Callable[[], None],
    mark_burst: bool = False,
) -> None:
    # On the connection's thread: COMMIT or ROLLBACK, then the writer lock, once it is over
    # (the burst marked before: no other writer slips in between).
    try:
        end()
    finally:
        if lock is not None and not conn.in_transaction:
            if mark_burst:
                lock.note_burst()
            lock.release()


class Connection(aiosqlite.Connection):
    # Known on this side: set after every statement from sqlite3's own answer, cleared by
    # commit and rollback. sqlite3's flag is asked too (a read of one field, safe from any
    # thread), so a transaction opened some other way is never left open by a skipped hop.
    in_transaction = False
    begin: str | None = None  # a BEGIN not sent yet
    lock: WriterLock | None = None  # taken by write transactions (None: in-memory)
    # False from a hop that was cancelled (its statement may still run on the thread) until
    # a rollback has queued behind it there.
    settled = True

    def cursor(self) -> Cursor:  # type: ignore[override]
        return Cursor(self)

    def _open(self) -> bool:
        return self.in_transaction or bool(self._connection and self._connection.in_transaction)

    async def commit(self) -> None:
        self.begin = None
        if self._open():
            await self._execute(_ended, self._conn, self.lock, self._conn.commit, burst.get())  # type: ignore[no-untyped-call]
            self.in_transaction = False

    async def rollback(self) -> None:
        self.begin = None
        if self._open():
            # Marked closed first; if ROLLBACK fails with the transaction still open, sqlite3's
            # own flag says so, and the next rollback is sent again.
            self.in_transaction = False
            if self.settled and self.lock is not None and not self.lock.held:
                # A transaction that only read (a reader's, or the pool's reset after one)
                # ends here: nothing to undo on disk, no lock to wait for; a hop costs more.
                self._conn.rollback()
                return
            await self._execute(_ended, self._conn, self.lock, self._conn.rollback)  # type: ignore[no-untyped-call]
            self.settled = True

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if self.lock is not None:
                self.lock.close()
                self.lock = None


def connector(path: str, **kwargs: Any) -> Callable[[], Coroutine[Any, Any, Connection]]:
    """An ``async_creator`` for SQLAlchemy: a new connection to the file at ``path``."""

    async def connect() -> Connection:
        # Used from the loop's thread too, never at the same time (see _small).
        opened = partial(sqlite3.connect, path, check_same_thread=False, **kwargs)
        connection = Connection(opened, iter_chunk_size=64)
        connection._thread.daemon = True  # as SQLAlchemy does for aiosqlite's own connect()
        await connection
        connection.lock = WriterLock(f"{path}-writer", float(kwargs.get("timeout", 5.0)))
        return connection

    return connect
