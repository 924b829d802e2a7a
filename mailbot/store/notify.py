"""Hearing other nodes: PostgreSQL ``LISTEN``/``NOTIFY``.

Two channels: :data:`CHANNEL` wakes workers when inbound work is stored; and
:data:`CHANGES_CHANNEL`, sent by a trigger on every new inbound row and status change
(migration 0009, payload ``<id> <status>``), wakes the live inbox of every web node.

A node that stores a message calls :func:`announce` inside the storing transaction.
PostgreSQL delivers the notification only when that transaction commits, so a worker that
hears it always finds the row; a rolled-back store wakes nobody. Every worker node runs
:func:`listen` on a connection of its own and sets its wake event on each notification.

Notifications are a shortcut, not the queue: a worker still polls every ``poll_seconds``,
so a lost notification (listener reconnecting, PostgreSQL restarted) delays a message by one
poll at most, never loses it. On SQLite both ends do nothing: one process owns the file and
wakes its worker in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger(__name__)

CHANNEL = "mailbot_inbound"
CHANGES_CHANNEL = "mailbot_inbound_changed"  # the trigger of migration 0009 sends it
APPLICATION_NAME = "mailbot-listen"  # in pg_stat_activity: the listener's own backend
KEEPALIVE_SECONDS = 30.0  # a connection that died silently (no FIN) is found this fast
RECONNECT_SECONDS = (0.1, 30.0)  # the first wait after a failure, and the longest
_ADAPTER_OPTIONS = ("prepared_statement_cache_size", "prepared_statement_name_func")


def _is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def announce(session: AsyncSession) -> None:
    """Tell listening workers that inbound work is waiting, when ``session``'s transaction
    commits (call it inside that transaction). Nothing on SQLite."""
    if _is_postgres(session):
        # One per transaction is enough: PostgreSQL folds equal notifications of one
        # transaction into one, so a group commit of many messages wakes each worker once.
        await session.execute(text(f"NOTIFY {CHANNEL}"))


def connect_args(database_url: str) -> dict[str, Any]:
    """asyncpg's keyword arguments for a SQLAlchemy URL, read as the engine reads it."""
    url = make_url(database_url)
    _args, options = url.get_dialect()().create_connect_args(url)
    # What SQLAlchemy's adapter takes for itself before it calls asyncpg.connect.
    for own in _ADAPTER_OPTIONS:
        options.pop(own, None)
    return dict(options)


async def listen(
    database_url: str,
    wake: asyncio.Event,
    *,
    connected: asyncio.Event | None = None,
    keepalive: float = KEEPALIVE_SECONDS,
    channel: str = CHANNEL,
) -> None:
    """Set ``wake`` on every notification on ``channel``, until cancelled; reconnect with
    backoff when the connection is lost. ``connected`` is set whenever the listener is
    (re)connected, and cleared while it is not."""
    shown = make_url(database_url).render_as_string(hide_password=True)
    options = connect_args(database_url)
    wait = RECONNECT_SECONDS[0]
    while True:
        try:
            await _listen_once(options, wake, connected, keepalive, channel)
            wait = RECONNECT_SECONDS[0]  # it was up, then went: try again at once
        except Exception as exc:  # noqa: BLE001 - PostgreSQL away: poll meanwhile, try again
            log.warning(
                "listening to %s on %s failed (%s: %s); polling until it is back, in %.1f s",
                channel,
                shown,
                type(exc).__name__,
                exc,
                wait,
            )
        if connected is not None:
            connected.clear()
        await asyncio.sleep(wait)
        wait = min(wait * 2, RECONNECT_SECONDS[1])


async def _listen_once(
    options: dict[str, Any],
    wake: asyncio.Event,
    connected: asyncio.Event | None,
    keepalive: float,
    channel: str,
) -> None:
    """One connection: returns when it was made and then lost, raises when it cannot be made."""
    import asyncpg  # the postgres extra; only a PostgreSQL node gets here

    lost = asyncio.Event()
    conn = await asyncpg.connect(
        **options, timeout=10, server_settings={"application_name": APPLICATION_NAME}
    )
    try:
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(channel, lambda *_args: wake.set())
        log.info("listening to PostgreSQL NOTIFY %s", channel)
        # Whatever was stored while we were not listening: look once now.
        wake.set()
        if connected is not None:
            connected.set()
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(keepalive):
                    await lost.wait()
            if not lost.is_set():
                try:
                    async with asyncio.timeout(keepalive):
                        await conn.execute("SELECT 1")
                except Exception as exc:  # noqa: BLE001 - gone without a word: reconnect
                    log.warning("the NOTIFY connection stopped answering (%s)", exc)
                    return
        log.warning("the NOTIFY connection was lost; reconnecting")
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await conn.close()
        if not conn.is_closed():
            conn.terminate()
