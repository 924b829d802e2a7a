"""The live inbox: every change to an inbound message, pushed over a WebSocket.

``WS /api/live?since=<updated_at>&q=<search>`` first sends what changed since ``since`` (the
page passes the newest change it has seen, so a reconnect catches up on what it missed),
then each change as it happens: ``{"type": "messages", "messages": [...]}``, each message in
the shape of ``GET /api/messages``; a ``{"type": "ping"}`` every 20 s keeps proxies from
closing a quiet socket.

The database is the source of events, so a web node sees the changes of every node and
nothing is lost while nobody listens: one :class:`Feed` per web node reads what changed (an
index on ``updated_at``) when it is told something did, and not at all while no page is open.
With PostgreSQL it is told by ``NOTIFY``: a trigger sends ``<id> <status>`` on every new
inbound row and status change, on whichever node made it, delivered when that transaction
commits (migration 0009, mailbot/store/notify.py); a slow look every ``FALLBACK_SECONDS``
is only a catch-up for a notification lost with its connection, and while that connection
is down the feed looks every ``POLL_SECONDS``. With SQLite, in process: the SMTP side
tells the feed of each message it stored (:meth:`Feed.stored`), and so does the worker each
time it finished messages, also from a child process of its own (MAILBOT_WORKER_PROCESS,
through a pipe); the feed looks every ``POLL_SECONDS`` for anything else (the CLI).
Changes are read with a two-second overlap, because a transaction may commit a little after
a later one, and sent once each per socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy import and_, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from mailbot.config import Settings
from mailbot.store import notify
from mailbot.store.db import Sessions
from mailbot.store.models import InboundMessage, utcnow
from mailbot.web import search, views

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25  # SQLite, or PostgreSQL while the NOTIFY connection is down
FALLBACK_SECONDS = 10.0  # PostgreSQL, listening: a look now and then, for a lost NOTIFY
OVERLAP = timedelta(seconds=2)
PING_SECONDS = 20.0
CATCH_UP = 500  # at most this many rows on (re)connect: the page pages for more
BACKLOG = 64  # batches queued for one socket; a socket this far behind is closed
PAGES_PER_POLL = 10  # at most this many pages of CATCH_UP rows a poll; the rest next time
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(eq=False)
class Listener:
    where: ColumnElement[bool] | None
    batches: asyncio.Queue[list[dict[str, Any]]] = field(
        default_factory=lambda: asyncio.Queue(BACKLOG)
    )
    behind: bool = False


class Feed:
    """One reader shared by every open page of this node; ``database_url`` names a
    PostgreSQL database to hear changes from through ``NOTIFY`` (None: look every
    ``POLL_SECONDS``)."""

    def __init__(self, sessions: Sessions, database_url: str | None = None) -> None:
        self.sessions = sessions
        self.database_url = database_url
        self.listeners: set[Listener] = set()
        self.listening = asyncio.Event()  # set while the NOTIFY connection is up
        self._someone = asyncio.Event()
        self._changed = asyncio.Event()
        self._cursor: datetime | None = None
        self._sent: dict[tuple[int, str], datetime] = {}

    async def join(self, listener: Listener) -> None:
        """From now on ``listener`` gets every change: the cursor is set before this
        returns, so a change committed after it is read at the next look."""
        if self._cursor is None:
            async with self.sessions() as session:
                newest = await session.scalar(select(func.max(InboundMessage.updated_at)))
            if self._cursor is None:
                self._cursor = newest or utcnow()
        self.listeners.add(listener)
        self._someone.set()

    def leave(self, listener: Listener) -> None:
        self.listeners.discard(listener)
        if not self.listeners:
            self._someone.clear()
            # The next page catches up through ?since=, not through a replay of everything
            # that changed while nobody looked.
            self._cursor = None

    def stored(self) -> None:
        """This node stored a message: look now (what other nodes and a worker in its own
        process change is heard through NOTIFY, or the next look)."""
        self._changed.set()

    async def run(self) -> None:
        """Until cancelled (the node's lifespan); a failed look is logged and tried again."""
        hearing: asyncio.Task[None] | None = None
        if self.database_url is not None:
            hearing = asyncio.create_task(
                notify.listen(
                    self.database_url,
                    self._changed,
                    connected=self.listening,
                    channel=notify.CHANGES_CHANNEL,
                )
            )
        try:
            while True:
                await self._someone.wait()
                wait = FALLBACK_SECONDS if self.listening.is_set() else POLL_SECONDS
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._changed.wait()
                # Cleared before reading: a change committed during the read wakes the next.
                self._changed.clear()
                try:
                    if await self._poll():
                        self._changed.set()  # a burst bigger than one look: go on at once
                except Exception:  # noqa: BLE001 - the database may be away for a moment
                    log.exception("the live inbox could not read changes; trying again")
                    await asyncio.sleep(1)
        finally:
            if hearing is not None:
                hearing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await hearing

    async def _poll(self) -> bool:
        """Send what changed to the listeners; True when more is left than one look reads."""
        more = False
        async with self.sessions() as session:
            if self._cursor is None:
                newest = await session.scalar(select(func.max(InboundMessage.updated_at)))
                self._cursor = newest or utcnow()
                return False
            # Keyset pages over (updated_at, id): a burst bigger than a page is read to its
            # end, never re-read forever from the same start.
            fresh: list[dict[str, Any]] = []
            after: tuple[datetime, int] | None = None
            for page in range(PAGES_PER_POLL):
                rows = await changed(session, self._cursor - OVERLAP, None, after=after)
                fresh += [r for r in rows if (r["id"], r["updated_at"]) not in self._sent]
                if len(rows) < CATCH_UP:
                    break
                more = page == PAGES_PER_POLL - 1
                after = (datetime.fromisoformat(rows[-1]["updated_at"]), rows[-1]["id"])
            if not fresh:
                return more
            wanted = await self._wanted(session, [r["id"] for r in fresh])
        now = utcnow()
        for r in fresh:
            self._sent[(r["id"], r["updated_at"])] = now
            self._cursor = max(self._cursor, datetime.fromisoformat(r["updated_at"]))
        self._sent = {k: at for k, at in self._sent.items() if now - at < OVERLAP * 3}
        for listener, keep in wanted.items():
            batch = [r for r in fresh if r["id"] in keep]
            if batch:
                try:
                    listener.batches.put_nowait(batch)
                except asyncio.QueueFull:
                    listener.behind = True  # its socket is closed; the page reconnects
        return more

    async def _wanted(self, session: Any, ids: list[int]) -> dict[Listener, set[int]]:
        """Which of ``ids`` each listener's search matches; a listener whose search fails
        is dropped (its socket closes, the page reconnects) and the others go on."""
        wanted: dict[Listener, set[int]] = {}
        for listener in list(self.listeners):
            if listener.where is None:
                wanted[listener] = set(ids)
                continue
            query = select(InboundMessage.id).where(InboundMessage.id.in_(ids), listener.where)
            try:
                wanted[listener] = set(await session.scalars(query))
            except Exception:  # noqa: BLE001 - one bad search must not stop every page
                log.exception("a live search failed; closing its socket")
                await session.rollback()
                listener.behind = True
                with contextlib.suppress(asyncio.QueueFull):
                    listener.batches.put_nowait([])  # wakes its socket, which then closes
        return wanted


async def changed(
    session: Any,
    since: datetime,
    where: ColumnElement[bool] | None,
    limit: int = CATCH_UP,
    after: tuple[datetime, int] | None = None,
) -> list[dict[str, Any]]:
    """Inbound rows changed at or after ``since`` (and past ``after``, a page's last
    ``(updated_at, id)``), oldest change first."""
    query = (
        views.listing()
        .where(InboundMessage.updated_at >= since)
        .order_by(InboundMessage.updated_at, InboundMessage.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(
            or_(
                InboundMessage.updated_at > after[0],
                and_(InboundMessage.updated_at == after[0], InboundMessage.id > after[1]),
            )
        )
    if where is not None:
        query = query.where(where)
    return views.listed_json((await session.execute(query)).all())


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return max(moment, EPOCH)  # far past minus the overlap must not overflow


def router(settings: Settings, sessions: Sessions, feed: Feed | None) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["live"])

    @api.websocket("/live")
    async def live(socket: WebSocket) -> None:
        if feed is None:
            await socket.close(code=1013, reason="the live inbox is not running on this node")
            return
        await socket.accept()
        query = socket.query_params.get("q", "")[: search.MAX_QUERY]
        listener = Listener(search.where(search.parse_query(query)) if query else None)
        try:
            await feed.join(listener)
            since = _since(socket.query_params.get("since"))
            if since is not None:
                async with sessions() as session:
                    missed = await changed(session, since - OVERLAP, listener.where)
                await socket.send_json(
                    {
                        "type": "messages",
                        "messages": missed,
                        "catch_up": True,
                        # More changed than one answer holds: the page reloads its list.
                        "more": len(missed) >= CATCH_UP,
                    }
                )
            await socket.send_json({"type": "ready"})
            await _forward(socket, listener)
        except WebSocketDisconnect:
            pass
        finally:
            feed.leave(listener)

    return api


async def _forward(socket: WebSocket, listener: Listener) -> None:
    closed = asyncio.create_task(_until_closed(socket))
    try:
        while not closed.done():
            getting = asyncio.create_task(listener.batches.get())
            done, _ = await asyncio.wait(
                {getting, closed}, timeout=PING_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            if getting not in done:
                getting.cancel()
                if not closed.done():
                    await socket.send_json({"type": "ping"})
                continue
            if listener.behind:
                await socket.close(code=1013, reason="too far behind: reconnect to catch up")
                return
            await socket.send_json({"type": "messages", "messages": getting.result()})
    finally:
        closed.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
            await closed


async def _until_closed(socket: WebSocket) -> None:
    """The page sends nothing; reading is how a closed socket is noticed."""
    while True:
        message = await socket.receive()
        if message["type"] == "websocket.disconnect":
            return
