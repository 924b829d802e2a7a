"""mailbot/store/sqlite_driver.py: aiosqlite with at most one thread hop per statement.

Checked through SQLAlchemy, as the node uses it: statements, rows and counts come back as
aiosqlite gives them, a transaction's BEGIN IMMEDIATE still takes the write lock before its
first statement runs, a failed statement never leaves a transaction open on a pooled
connection, and rollback or commit with nothing open costs no hop.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from mailbot.store import sqlite_driver
from mailbot.store.db import database


def _url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}"


async def test_rows_counts_and_ids_come_back_through_sqlalchemy(tmp_path: Path) -> None:
    async with database(_url(tmp_path)) as (engine, _sessions):
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
            inserted = await conn.execute(text("INSERT INTO t (v) VALUES ('a')"))
            assert inserted.lastrowid == 1
            await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "b"}, {"v": "c"}])
            updated = await conn.execute(text("UPDATE t SET v = v || '!' WHERE id > 1"))
            assert updated.rowcount == 2
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT id, v FROM t ORDER BY id"))).all()
            assert [tuple(r) for r in rows] == [(1, "a"), (2, "b!"), (3, "c!")]
            assert (await conn.execute(text("SELECT v FROM t WHERE id = 9"))).first() is None
            raw = await conn.get_raw_connection()
            assert isinstance(raw.driver_connection, sqlite_driver.Connection)


async def test_a_write_transaction_holds_the_lock_from_its_first_statement(tmp_path: Path) -> None:
    url = _url(tmp_path)
    async with database(url) as (engine, _s), database(url) as (other, _o):
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
        async with engine.begin() as conn:
            # A read first: BEGIN IMMEDIATE, sent with it, already holds the write lock (a
            # plain BEGIN would not, and the other writer would not wait).
            await conn.execute(text("SELECT count(*) FROM t"))
            # The other connection's BEGIN IMMEDIATE waits for this one: it is a real writer.
            writing = asyncio.create_task(_insert(other, 2))
            await asyncio.sleep(0.3)
            assert not writing.done()
            await conn.execute(text("INSERT INTO t VALUES (1)"))
        await writing
        async with engine.connect() as conn:
            values = (await conn.execute(text("SELECT v FROM t ORDER BY v"))).scalars().all()
        assert values == [1, 2]


async def _insert(engine: object, value: int) -> None:
    async with engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": value})


async def test_a_failed_statement_leaves_no_transaction_behind(tmp_path: Path) -> None:
    url = _url(tmp_path)
    async with database(url) as (engine, _s), database(url) as (other, _o):
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER UNIQUE)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
        # The first statement failing (its BEGIN went with it), and a later one.
        for values in ([1], [2, 1]):
            with pytest.raises(Exception, match="UNIQUE"):
                async with engine.begin() as conn:
                    for value in values:
                        await conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": value})
        # Rolled back, and the lock let go: another connection writes at once.
        await asyncio.wait_for(_insert(other, 3), timeout=10)
        async with engine.connect() as conn:
            kept = (await conn.execute(text("SELECT v FROM t ORDER BY v"))).scalars().all()
        assert kept == [1, 3]


def _count_hops(connection: sqlite_driver.Connection) -> list[None]:
    """Grows by one for each call that goes to the connection's thread."""
    hops: list[None] = []
    execute = connection._execute

    async def counted(*args: Any, **kwargs: Any) -> Any:
        hops.append(None)
        return await execute(*args, **kwargs)  # type: ignore[no-untyped-call]

    connection._execute = counted  # type: ignore[method-assign]
    return hops


async def test_rollback_and_commit_with_nothing_open_cost_no_hop(tmp_path: Path) -> None:
    connection = await sqlite_driver.connector(str(tmp_path / "hops.db"))()
    hops = _count_hops(connection)
    try:
        await connection.rollback()
        await connection.commit()
        assert len(hops) == 0
        cursor = connection.cursor()
        await cursor.execute("BEGIN IMMEDIATE")
        assert len(hops) == 0  # waits for the first statement
        await cursor.execute("CREATE TABLE t (v INTEGER)")
        assert len(hops) == 0 and connection.in_transaction  # the lock was free: begun here
        await connection.commit()
        assert len(hops) == 1 and not connection.in_transaction  # the commit (an fsync) hops
    finally:
        await connection.close()


async def test_a_transaction_that_only_read_ends_without_a_hop_unless_a_hop_was_cut_short(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "reads.db")
    writer = await sqlite_driver.connector(path)()
    reader = await sqlite_driver.connector(path)()
    hops = _count_hops(reader)
    release = threading.Event()
    try:
        await writer.execute("PRAGMA journal_mode=WAL")
        await writer.execute("CREATE TABLE t (v INTEGER)")
        await writer.execute("INSERT INTO t VALUES (1)")
        await writer.commit()
        cursor = reader.cursor()
        await cursor.execute("BEGIN")
        await cursor.execute("SELECT v FROM t")
        assert await cursor.fetchall() == [(1,)] and reader.in_transaction
        assert len(hops) == 1  # the read (no write lock to hold it on this thread)
        await reader.rollback()
        assert len(hops) == 1 and not reader.in_transaction  # ended here
        # Ended for real: a write and a checkpoint that must wait for no reader go through.
        await writer.execute("INSERT INTO t VALUES (2)")
        await writer.commit()
        busy, _, _ = await (await writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")).fetchone()
        assert busy == 0

        # A hop cut short may still run on the thread: the rollback queues behind it there.
        await cursor.execute("BEGIN")
        started = threading.Event()
        reader._conn.create_function("slow", 1, lambda v: started.set() or release.wait(5) and v)
        read = asyncio.create_task(cursor.execute("SELECT slow(v) FROM t"))
        await asyncio.to_thread(started.wait, 5)
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
        hops.clear()
        rolled_back = asyncio.create_task(reader.rollback())
        await asyncio.sleep(0.05)
        assert len(hops) == 1 and not rolled_back.done()  # in line behind the cut-short read
        release.set()
        await rolled_back
        assert not reader._conn.in_transaction
        await reader.rollback()  # nothing open: no hop, and settled again
        await cursor.execute("BEGIN")
        await cursor.execute("SELECT count(*) FROM t")
        hops.clear()
        await reader.rollback()
        assert hops == []
    finally:
        release.set()
        await reader.close()
        await writer.close()


async def test_a_write_transaction_s_later_small_statements_run_without_a_hop(
    tmp_path: Path,
) -> None:
    connection = await sqlite_driver.connector(str(tmp_path / "inline.db"))()
    hops = _count_hops(connection)
    big = "x" * (sqlite_driver.INLINE_BYTES + 1)
    try:
        cursor = connection.cursor()
        await cursor.execute("BEGIN IMMEDIATE")
        await cursor.execute("CREATE TABLE t (v TEXT)")
        assert len(hops) == 0  # the BEGIN goes with the first statement; the lock was free
        for value in ("a", "b", "c"):
            await cursor.execute("INSERT INTO t (v) VALUES (?)", (value,))
        await cursor.execute("SELECT v FROM t ORDER BY v")
        assert [row[0] for row in await cursor.fetchall()] == ["a", "b", "c"]
        assert len(hops) == 0  # the lock is the transaction's: nothing to wait for, no hop
        await cursor.execute("INSERT INTO t (v) VALUES (?)", (big,))
        await cursor.executemany("INSERT INTO t (v) VALUES (?)", [("d",), ("e",)])
        assert len(hops) == 2  # a big value, or several rows, still go to the thread
        with pytest.raises(sqlite3.OperationalError):  # an error on the caller's thread too
            await cursor.execute("INSERT INTO nowhere VALUES (1)")
        assert connection.in_transaction
        await connection.commit()
        assert not connection.in_transaction
        await cursor.execute("SELECT count(*) FROM t")  # a read outside any transaction
        assert await cursor.fetchall() == [(6,)]
        assert len(hops) == 4  # the commit, and the read: no write lock held, so through the thread
    finally:
        await connection.close()


async def test_many_values_that_are_big_in_all_still_go_to_the_thread(tmp_path: Path) -> None:
    connection = await sqlite_driver.connector(str(tmp_path / "sum.db"))()
    hops = _count_hops(connection)
    half = "x" * (sqlite_driver.INLINE_BYTES // 2 + 1)
    try:
        cursor = connection.cursor()
        await cursor.execute("BEGIN IMMEDIATE")
        await cursor.execute("CREATE TABLE t (v TEXT)")
        await cursor.execute("INSERT INTO t (v) VALUES (?)", (half,))
        assert len(hops) == 0  # one half alone is small
        await cursor.execute("INSERT INTO t (v) VALUES (?), (?)", (half, half))
        assert len(hops) == 1  # each is under the bound, together they are over it
        await connection.commit()
    finally:
        await connection.close()


def _writer_lock_free(db: Path) -> bool:
    """Whether mailbot's writer lock beside ``db`` could be taken now (asked from outside)."""
    import fcntl
    import os

    fd = os.open(f"{db}-writer", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


async def test_the_writer_lock_is_held_exactly_while_a_write_transaction_is_open(
    tmp_path: Path,
) -> None:
    db = tmp_path / "driver.db"
    async with database(_url(tmp_path)) as (engine, _sessions):
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER UNIQUE)"))
        assert _writer_lock_free(db)
        async with engine.begin() as conn:
            await conn.execute(text("SELECT count(*) FROM t"))
            assert not _writer_lock_free(db)  # taken with BEGIN IMMEDIATE, before any write
            await conn.execute(text("INSERT INTO t VALUES (1)"))
        assert _writer_lock_free(db)  # commit let it go
        with pytest.raises(Exception, match="UNIQUE"):
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO t VALUES (1)"))
        assert _writer_lock_free(db)  # so did the rollback after a failed statement
        async with engine.connect() as conn:  # every transaction of the writer engine writes
            await conn.execute(text("SELECT v FROM t"))
            assert not _writer_lock_free(db)
        assert _writer_lock_free(db)  # closed: rolled back, and let go


_HOLDER = """
import asyncio, sys
from sqlalchemy import text
from mailbot.store.db import database

async def main():
    async with database(sys.argv[1]) as (engine, _):
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t VALUES (1)"))
            print("holding", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

asyncio.run(main())
"""


@pytest.mark.parametrize("ending", ["commits", "is killed"])
async def test_a_writer_in_another_process_goes_once_the_holder_ends(
    tmp_path: Path, ending: str
) -> None:
    import signal
    import sys

    url = _url(tmp_path)
    async with database(url) as (engine, _sessions):
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
        holder = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _HOLDER,
            url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert holder.stdout is not None and holder.stdin is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 60) == b"holding\n"
        writing = asyncio.create_task(_insert(engine, 2))
        await asyncio.sleep(0.3)
        assert not writing.done()  # queued behind the other process's transaction
        if ending == "commits":
            holder.stdin.write(b"go\n")
            await holder.stdin.drain()
        else:
            holder.send_signal(signal.SIGKILL)  # its locks go with it; its insert never was
        await asyncio.wait_for(writing, 60)
        await holder.wait()
        async with engine.connect() as conn:
            values = (await conn.execute(text("SELECT v FROM t ORDER BY v"))).scalars().all()
    assert values == ([1, 2] if ending == "commits" else [2])


async def _lock_of(conn: Any) -> sqlite_driver.WriterLock:
    driver = (await conn.get_raw_connection()).driver_connection
    assert isinstance(driver, sqlite_driver.Connection) and driver.lock is not None
    return driver.lock


async def _urgent_insert(engine: object, value: int) -> None:
    token = sqlite_driver.urgent.set(True)
    try:
        await _insert(engine, value)
    finally:
        sqlite_driver.urgent.reset(token)


async def test_a_writer_senders_wait_on_goes_before_one_that_waited_longer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_driver, "POLITE_SECONDS", 30.0)  # longer than this test holds
    url = _url(tmp_path)
    async with (
        database(url) as (holder, _h),
        database(url) as (background, _b),
        database(url) as (smtp, _s),
    ):
        async with holder.begin() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
        async with holder.begin() as conn:
            await conn.execute(text("INSERT INTO t VALUES (1)"))
            later = asyncio.create_task(_insert(background, 2))  # waits first
            await asyncio.sleep(0.2)
            urgent = asyncio.create_task(_urgent_insert(smtp, 3))
            await asyncio.sleep(0.2)
            assert not later.done() and not urgent.done()
            assert (await _lock_of(conn)).wanted()  # the holder can see it is waited on
        await asyncio.wait_for(asyncio.gather(later, urgent), 10)
        async with holder.connect() as conn:
            assert not (await _lock_of(conn)).wanted()
            rowids = (await conn.execute(text("SELECT v FROM t ORDER BY rowid"))).scalars().all()
    assert rowids == [1, 3, 2]  # the urgent one went first


async def test_a_writer_nobody_waits_on_lets_urgent_ones_by_only_for_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "driver.db"
    lock = sqlite_driver.WriterLock(f"{db}-writer", timeout=5)
    wanted = os.open(f"{db}-writer-wanted", os.O_RDWR)
    try:
        fcntl.flock(wanted, fcntl.LOCK_SH)  # an urgent writer waits, and never takes its turn
        monkeypatch.setattr(sqlite_driver, "POLITE_SECONDS", 0.2)
        await asyncio.wait_for(asyncio.to_thread(lock.take), 10)
        assert lock.held  # taken once its politeness ran out: never starved
    finally:
        lock.close()
        os.close(wanted)


def _mark(db: Path, at: float, pid: int) -> None:
    flag = os.open(f"{db}-writer-wanted", os.O_RDWR)
    try:
        os.pwrite(flag, struct.pack("dq", at, pid), 0)
    finally:
        os.close(flag)


async def test_after_a_burst_s_commit_the_others_stay_out_a_moment_never_longer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "driver.db"
    server = sqlite_driver.WriterLock(f"{db}-writer", timeout=5)
    worker = sqlite_driver.WriterLock(f"{db}-writer", timeout=5)
    monkeypatch.setattr(sqlite_driver, "BURST_SECONDS", 3600.0)  # no race with the clock
    try:
        assert worker.try_take() and not worker.in_burst()  # no mark yet: free is free
        worker.release()
        server.note_burst()  # a commit of several senders' rows, just now, here
        assert not worker.in_burst()  # in one process the writers share one connection
        _mark(db, time.monotonic(), os.getpid() + 1)  # the same, by the SMTP server's process
        assert worker.in_burst() and not worker.try_take()  # polite: stays out
        assert worker.try_take(urgent=True)  # a writer senders wait on still goes
        worker.release()
        monkeypatch.setattr(sqlite_driver, "POLITE_SECONDS", 0.2)
        await asyncio.wait_for(asyncio.to_thread(worker.take), 10)
        assert worker.held  # a burst that never ends delays it, never stops it
        worker.release()
        # A mark from before a reboot reads as the future: it counts for nothing.
        _mark(db, 1e12, os.getpid() + 1)
        assert not worker.in_burst() and worker.try_take()
    finally:
        server.close()
        worker.close()


async def test_a_begin_that_must_wait_waits_on_the_thread_not_on_the_loop(
    tmp_path: Path,
) -> None:
    """Held by mailbot's other writer (the lock file), or by a writer outside mailbot (a
    ``sqlite3`` shell, which SQLite alone knows of): either way the event loop goes on."""
    db = tmp_path / "wait.db"
    connection = await sqlite_driver.connector(str(db), timeout=30)()  # as the node opens it
    hops = _count_hops(connection)
    outsider = sqlite3.connect(db, isolation_level=None)
    try:
        cursor = connection.cursor()
        await cursor.execute("BEGIN IMMEDIATE")
        await cursor.execute("CREATE TABLE t (v INTEGER)")
        await connection.commit()
        hops.clear()
        outsider.execute("BEGIN IMMEDIATE")  # SQLite's own write lock, not mailbot's file
        await cursor.execute("BEGIN IMMEDIATE")
        writing = asyncio.create_task(cursor.execute("INSERT INTO t VALUES (1)"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(20):  # the loop turns while the insert waits
            await asyncio.sleep(0.01)
        # Not a speed check: frozen, the loop would have waited SQLite's 30 s busy timeout.
        assert loop.time() - started < 10 and not writing.done()
        assert len(hops) == 1  # tried here without waiting, then waits on the thread
        outsider.execute("COMMIT")
        await asyncio.wait_for(writing, 10)
        await connection.commit()
        await cursor.execute("SELECT v FROM t")
        assert await cursor.fetchall() == [(1,)]
    finally:
        outsider.close()
        await connection.close()
