"""The database engine, sessions and migrations.

SQLite is the embedded default (one process; WAL so the web page can read while the worker
writes); PostgreSQL is the shared store when several nodes run. Both go through the same
async SQLAlchemy engine; the only dialect-specific code is here and in :mod:`mailbot.store.spool`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from mailbot.errors import ConfigError
from mailbot.store import sqlite_driver

Sessions = async_sessionmaker[AsyncSession]
# How a caller opens a session: ``Sessions``, or ``lambda: nullcontext(session)`` to do the
# work in one already open.
OpenSession = Callable[[], AbstractAsyncContextManager[AsyncSession]]
# What only runs Core statements can run them on either; a connection costs less CPU.
Reader = AsyncSession | AsyncConnection
OpenReader = Callable[[], AbstractAsyncContextManager[Reader]]

# ``session.info`` key: the session's transaction already holds other rows' locks (a batch
# past its first message, mailbot/store/finish.py); it must not wait for another's.
HOLDING = "mailbot.holding"
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for FOR UPDATE NOWAIT on a held row


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        # One connection: SQLite has one writer anyway, and every transaction here takes the
        # write lock (BEGIN IMMEDIATE). Queued in the pool, a transaction starts the moment
        # the last one ends; queued in SQLite's busy handler, it sleeps up to 100 ms a try.
        engine = create_async_engine(
            url,
            **_sqlite_connect(url),
            pool_size=1,
            max_overflow=0,
            pool_timeout=120,
            json_serializer=_json,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    try:
        import asyncpg  # noqa: F401 - only asked whether it is there
    except ImportError:
        raise ConfigError(
            "PostgreSQL needs its driver, which is an extra: pip install 'mailbot-server[postgres]'"
        ) from None
    # Enough kept open for the SMTP sessions and the worker pool at once: a connection
    # opened per checkout (the overflow) costs a connect and TLS set-up each time.
    return create_async_engine(
        url, pool_pre_ping=True, pool_size=20, max_overflow=20, json_serializer=_json
    )


def sqlite_file(url: str) -> str | None:
    """The file a SQLite URL names; None for any other database, in-memory, or a file: URI."""
    if not url.startswith("sqlite"):
        return None
    path = make_url(url).database
    return None if not path or path == ":memory:" or path.startswith("file:") else path


def _sqlite_connect(url: str) -> dict[str, Any]:
    """How to open a connection to a SQLite file: one thread hop per statement
    (mailbot/store/sqlite_driver.py). An in-memory database keeps aiosqlite's own."""
    path = sqlite_file(url)
    # URL options (?mode=ro&uri=true, ?timeout=) are the dialect's to apply: left to it.
    if path is None or make_url(url).query:
        return {"connect_args": {"timeout": 30}}
    # The home folder (MAILBOT_HOME) on first use; private: keys and mail live there.
    Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return {"async_creator": sqlite_driver.connector(path, timeout=30)}


def _json(value: Any) -> str:
    # Non-ASCII kept as itself, not as \u escapes: the inbox search (mailbot/web/search.py)
    # looks for "Jürgen" in the stored JSON text, on SQLite and PostgreSQL alike.
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only its \u escape can be stored
        return json.dumps(value)
    return text


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the driver, issue BEGIN (SQLAlchemy's documented recipe; it makes
    # SAVEPOINT work, which bots' hooks rely on).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a row the SMTP server acknowledged with 250 survives a power cut.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock up front and waits for it (busy_timeout). A deferred
    # transaction that reads and then writes fails at once with SQLITE_BUSY when another
    # connection committed in between; every transaction here is short, so waiting is right.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_reader(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")  # a reader that tried to write would fail, loudly
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_read_begin(conn: Connection) -> None:
    # A deferred transaction that only reads: in WAL mode it sees the last commit and never
    # waits for the writer, nor makes it wait.
    conn.exec_driver_sql("BEGIN")


@asynccontextmanager
async def readers(url: str, sessions: Sessions) -> AsyncIterator[Sessions]:
    """Sessions for lookups that only read (RCPT, the API). On SQLite, connections of their
    own beside the one writer, so a lookup never queues behind a long write; elsewhere,
    ``sessions`` itself."""
    if not url.startswith("sqlite"):
        yield sessions
        return
    # Eight kept open (a SQLite connection costs a thread and a connect), more for a burst.
    engine = create_async_engine(
        url, **_sqlite_connect(url), pool_size=8, max_overflow=8, json_serializer=_json
    )
    event.listen(engine.sync_engine, "connect", _sqlite_reader)
    event.listen(engine.sync_engine, "begin", _sqlite_read_begin)
    try:
        yield make_sessions(engine)
    finally:
        await engine.dispose()


async def writer_wanted(session: AsyncSession) -> bool:
    """Whether a writer that senders wait on (the SMTP server's group commit) waits for this
    session's write transaction to end: a long one ends early then (SQLite; elsewhere the
    database has no one writer, and this is False)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    lock = getattr(raw.driver_connection, "lock", None)
    return isinstance(lock, sqlite_driver.WriterLock) and lock.held and lock.wanted()


def make_sessions(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, expire_on_commit=False)


def engine_of(sessions: Sessions) -> AsyncEngine:
    """The engine ``sessions`` are bound to: for hot paths that need no ORM (Core statements
    on a connection cost about half the CPU they cost through a session)."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        raise TypeError("these sessions are bound to no engine")
    return bind


@asynccontextmanager
async def database(url: str) -> AsyncIterator[tuple[AsyncEngine, Sessions]]:
    """The engine as a lifespan resource: disposed on the way out, only if it was made."""
    engine = make_engine(url)
    try:
        yield engine, make_sessions(engine)
    finally:
        await engine.dispose()


def migrations_dir() -> Path:
    here = Path(__file__).resolve().parents[1] / "migrations"  # mailbot/migrations
    if (here / "env.py").is_file():
        return here
    raise ConfigError("the Alembic migrations folder is missing from this installation")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply migrations over the engine's own connection (no second event loop needed)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))

    def run(connection: Connection) -> None:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def check_current(engine: AsyncEngine) -> None:
    """Refuse to run on a schema that is not at the newest migration, with the fix in words."""
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()

    def current(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as conn:
        have = await conn.run_sync(current)
    if have != head:
        raise ConfigError(
            f"the database schema is at {have or 'nothing'}, this mailbot needs {head}: "
            "run `mailbot db upgrade`"
        )
