"""A running node: every resource started in order, stopped in reverse, only if it started.

    database → (migrations) → analyser processes → worker, rescan, outbox → SMTP listener
      → HTTP

:func:`running` is what ``mailbot serve`` and the tests use alike; ports may be 0 (the
operating system picks one, and :class:`Node` says which).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncEngine

from mailbot import ingress
from mailbot.app import Mailbot
from mailbot.config import Settings
from mailbot.outbound import delivery, signing, webhooks
from mailbot.outbound import record as outbox_record
from mailbot.pipeline import worker
from mailbot.pipeline.analyse import Analyser
from mailbot.pipeline.memory import return_big_blocks, settle_heap
from mailbot.pipeline.stages import Deps
from mailbot.recipients import Directory
from mailbot.screen import Limits as MessageLimits
from mailbot.smtp.handler import ReceiveHandler
from mailbot.smtp.listener import listening
from mailbot.smtp.ratelimit import Limits
from mailbot.spam.client import checker_for
from mailbot.spam.policy import ScoreTable
from mailbot.spam.rescan import rescan_loop
from mailbot.store import blobs, notify, spool
from mailbot.store.db import Sessions, check_current, database, readers, upgrade
from mailbot.store.group_commit import GroupCommit
from mailbot.store.retention import retention_loop
from mailbot.web import check_exposure, make_app
from mailbot.web.guard import check_stored_tokens
from mailbot.web.live import Feed

log = logging.getLogger(__name__)


@dataclass
class Node:
    settings: Settings
    engine: AsyncEngine
    sessions: Sessions
    smtp_port: int = 0
    smtps_port: int | None = None  # the implicit-TLS port, when settings.smtps_port is set
    http_port: int = 0
    wake_worker: asyncio.Event = field(default_factory=asyncio.Event)
    wake_outbox: asyncio.Event = field(default_factory=asyncio.Event)
    feed: Feed | None = None  # the live inbox, when this node serves HTTP
    # Called each time the worker finished messages (the outbox is woken anyway); the
    # worker child tells its parent's live inbox through it (mailbot/pipeline/child.py).
    on_worked: list[Callable[[], None]] = field(default_factory=list)

    def worked(self) -> None:
        self.wake_outbox.set()
        for hook in self.on_worked:
            hook()


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The node owns SIGINT/SIGTERM and stops every part in order; uvicorn must not.
        yield


def _stored(node: Node, feed: Feed | None) -> None:
    """A message was stored here: wake this node's worker and its live inbox."""
    node.wake_worker.set()
    if feed is not None:
        feed.stored()


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    app: Mailbot,
    *,
    smtp: bool = True,
    work: bool = True,
    http: bool = True,
    transport: delivery.Transport | None = None,
) -> AsyncIterator[Node]:
    """Start the parts of a node (``transport``: where outbound mail goes, by default the
    one the settings name; tests give an MX transport pointed at a loopback sink)."""
    if http:
        check_exposure(settings)  # before anything starts: an open API is a config error
        ingress.check(settings)  # and so is a webhook credential that cannot be used
    if work and (key := signing.key_for(settings)) is not None:  # a bad key: said now
        log.info(
            "outbound mail is DKIM-signed as %s (%s)",
            signing.record_name(key),
            key.algorithm.decode(),
        )
    async with contextlib.AsyncExitStack() as stack:
        engine, sessions = await stack.enter_async_context(database(settings.database_url))
        if settings.should_migrate_on_start:
            await upgrade(engine)
        else:
            await check_current(engine)
        if http:
            await check_stored_tokens(settings, sessions)
        node = Node(settings, engine, sessions)
        # The live inbox's one reader (mailbot/web/live.py); on PostgreSQL it hears the
        # changes of every node through NOTIFY, and mail stored here it is told of at once.
        feed = Feed(sessions, None if settings.is_sqlite else settings.database_url)
        if http:
            node.feed = feed
            node.on_worked.append(feed.stored)  # this node's own worker's changes, at once
        return_big_blocks()  # big mail must not leave this process gigabytes large
        if settings.is_sqlite and work:
            await spool.recover(sessions)  # one node owns a SQLite file: nothing is in flight
            await outbox_record.recover(sessions)  # nor is any outbound mail being sent
        spam = checker_for(settings)
        if spam is None:
            log.warning("spam scanning is off (MAILBOT_SPAMD unset): inbound mail is not scanned")
        else:
            log.info("spamd %s scans inbound mail (down: %s)", spam.address, settings.spamd_down)
        if not settings.sends:
            log.warning("no relay (MAILBOT_RELAY unset): outbound mail is held, not sent")
        elif not settings.relay:
            log.info("outbound mail goes straight to each recipient domain's MX")

        store = blobs.for_settings(settings)
        # On SQLite, reads (RCPT lookups, the worker loading a message) never wait for the
        # writer, nor make it wait.
        lookups = await stack.enter_async_context(readers(settings.database_url, sessions))
        if work:
            analyser = await stack.enter_async_context(
                Analyser(
                    settings.cpu_workers,
                    settings.analyse_timeout,
                    memory_mb=settings.analyse_memory_mb,
                    limits=MessageLimits.from_settings(settings),
                    blob_root=blobs.root_for(settings),
                )
            )
            deps = Deps(
                settings=settings,
                app=app,
                analyse=analyser,
                spam=spam,
                blobs=store,
                readers=lookups,
            )
            await _task(stack, worker.run(sessions, deps, node.wake_worker, node.worked))
            if not settings.is_sqlite:
                # SMTP nodes elsewhere wake this worker through PostgreSQL (store/notify.py).
                await _task(stack, notify.listen(settings.database_url, node.wake_worker))
            if spam is not None:
                every = settings.spamd_recheck_seconds
                await _task(stack, rescan_loop(sessions, spam, node.wake_worker, every))
            sender = delivery.sender_loop(sessions, settings, node.wake_outbox, transport)
            await _task(stack, sender)
            if settings.webhook_urls:
                webhooks.check(settings)
                await _task(stack, webhooks.webhook_loop(sessions, settings))
            temporary = [b.name for b in app.bots.values() if b.subdomain]
            await _task(stack, retention_loop(sessions, settings, temporary))
        handler: ReceiveHandler | None = None
        if smtp or (http and ingress.wanted(settings)):
            limits = Limits(settings)
            # Entered before the listener and HTTP, so it closes after them: the last rows
            # commit.
            commits = await stack.enter_async_context(
                GroupCommit(
                    sessions,
                    blobs=store,
                    blob_threshold=settings.blob_threshold,
                )
            )
            # The SMTP policy gets the deployment as plain data, not the Bot API; the
            # providers' webhooks (mailbot/ingress/) store through it too.
            handler = ReceiveHandler(
                settings,
                sessions,
                Directory.of(app, settings.domains),
                on_stored=lambda _id: _stored(node, feed if http else None),
                limits=limits,
                spam=spam,
                bots=ScoreTable.of(app),
                commits=commits,
                lookups=lookups,
            )
        if smtp:
            assert handler is not None
            # The plain port (STARTTLS) and the implicit-TLS one: mailbot/smtp/listener.py.
            ports = await stack.enter_async_context(listening(settings, handler, limits))
            node.smtp_port, node.smtps_port = ports.smtp, ports.smtps
        if http:
            sock = socket.create_server((settings.http_host, settings.http_port))
            node.http_port = sock.getsockname()[1]
            await _task(stack, feed.run())
            config = uvicorn.Config(
                make_app(
                    settings,
                    sessions,
                    feed,
                    frozenset(app.bots),
                    {b.name: b.subdomain for b in app.bots.values() if b.subdomain},
                    _ingress(settings, handler),
                ),
                log_level="warning",
                lifespan="off",
            )
            web = _Uvicorn(config)
            web_task = asyncio.create_task(web.serve(sockets=[sock]))
            stack.push_async_callback(_stop_uvicorn, web, web_task, sock)
            log.info("HTTP listening on http://%s:%s", settings.http_host, node.http_port)
        settle_heap()  # start-up's objects out of every later full collection
        yield node


def _ingress(settings: Settings, handler: ReceiveHandler | None) -> APIRouter | None:
    """The providers' webhook routes (mailbot/ingress/), when any is set up."""
    if handler is None or not ingress.wanted(settings):
        return None
    return ingress.router(settings, handler)


async def _task(stack: contextlib.AsyncExitStack, coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(coro)

    async def stop() -> None:
        # Cancel again until it ends: a library that swallows one cancellation (aiosmtplib
        # closing a connection, a driver) must not keep the node from stopping.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)


async def _stop_uvicorn(web: uvicorn.Server, task: asyncio.Task[None], sock: socket.socket) -> None:
    web.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await task
    sock.close()
