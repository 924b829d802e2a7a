"""One mail through the real pipeline, in-process: no SMTP socket, no HTTP, no running node.

::

    async with Harness(app, tmp_path, transport=RecordingTransport()) as h:
        thread = await h.thread("issue-1", ("alice", "bob"))  # a comments conversation
        row = await h.receive(build_mail("alice@example.com", thread.addresses["alice"], "hi",
                                         commands=["/unsubscribe"]))
        assert row.status is InboundStatus.delivered
        assert h.command_results(row) == [("/unsubscribe", "done")]
        assert await h.comments("issue-1") == [("alice@example.com", "hi")]
        [mail] = h.transport.to("bob@example.com")

:meth:`Harness.receive` stores the bytes with the spool as SMTP DATA does (after the same
header screen), runs them through the worker's own code (analysis in this process, SPF/DKIM/
DMARC against offline DNS, the bot), then delivers the outbox through the transport. Nothing
keeps running between calls: every step is awaited before ``receive`` returns.
"""

from __future__ import annotations

import contextlib
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

from sqlalchemy import select

from mailbot.app import Mailbot, configure
from mailbot.config import Settings
from mailbot.outbound import delivery
from mailbot.pipeline import worker
from mailbot.pipeline.analyse import Analyser
from mailbot.pipeline.stages import Deps
from mailbot.screen import Limits, screen_headers
from mailbot.store import blobs, conversations, spool
from mailbot.store.db import Sessions, check_current, database, upgrade
from mailbot.store.models import Conversation, InboundMessage
from mailbot.testing.node import Thread, make_thread, settings_for
from mailbot.testing.transport import RecordingTransport

# Outbound rows are ``queued`` only when a relay is configured; the transport stands in for
# it, so this address is never connected to (``.invalid`` cannot resolve, RFC 2606).
RECORDING_RELAY = "smtp://relay.invalid:25"


class NotAccepted(Exception):
    """The mail would have been refused at DATA (a header section over a limit)."""


T = TypeVar("T", bound=delivery.Transport)


class Harness(Generic[T]):
    """The pipeline of one node against its own SQLite file, driven one mail at a time.

    ``overrides`` are settings (``settings_for``); ``transport`` defaults to a fresh
    :class:`RecordingTransport`."""

    @overload
    def __init__(
        self: Harness[RecordingTransport], app: Mailbot, tmp_path: Path, **overrides: Any
    ) -> None: ...

    @overload
    def __init__(self, app: Mailbot, tmp_path: Path, *, transport: T, **overrides: Any) -> None: ...

    def __init__(
        self, app: Mailbot, tmp_path: Path, *, transport: Any = None, **overrides: Any
    ) -> None:
        overrides.setdefault("relay", RECORDING_RELAY)
        self.settings: Settings = settings_for(tmp_path, **overrides)
        # With ``bots=`` or ``bots_dir=`` the deployment is what serve would run: the bots
        # of that folder and of installed packages added, each bot's table applied.
        configured = self.settings.bots or self.settings.bots_dir is not None
        self.app = configure(app, self.settings) if configured else app
        # The overloads make ``T`` what was passed, or RecordingTransport when nothing was.
        chosen: Any = transport if transport is not None else RecordingTransport()
        self.transport: T = chosen
        self._stack = contextlib.AsyncExitStack()
        self._sessions: Sessions | None = None
        self._deps: Deps | None = None

    @property
    def sessions(self) -> Sessions:
        if self._sessions is None:
            raise RuntimeError("use the harness as `async with Harness(...) as h:`")
        return self._sessions

    async def __aenter__(self) -> Harness[T]:
        try:
            engine, self._sessions = await self._stack.enter_async_context(
                database(self.settings.database_url)
            )
            if self.settings.should_migrate_on_start:
                await upgrade(engine)
            else:
                await check_current(engine)
            # No processes: analysis runs in this one, as tests and `cpu_workers = 0` want.
            analyser = await self._stack.enter_async_context(
                Analyser(
                    0,
                    self.settings.analyse_timeout,
                    limits=Limits.from_settings(self.settings),
                    blob_root=blobs.root_for(self.settings),
                )
            )
        except BaseException:
            await self._stack.aclose()
            raise
        self._deps = Deps(
            settings=self.settings,
            app=self.app,
            analyse=analyser,
            spam=None,
            blobs=blobs.for_settings(self.settings),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._sessions = self._deps = None
        await self._stack.aclose()

    async def thread(
        self,
        key: str = "issue-1",
        people: tuple[str, ...] = ("alice", "bob", "carol"),
        *,
        bot: str = "comments",
        domain: str = "example.com",
    ) -> Thread:
        """A conversation with participants ``<person>@<domain>``, each with a reply address."""
        return await make_thread(self, key, people, bot=bot, domain=domain)

    async def receive(
        self,
        raw: bytes,
        *,
        mail_from: str | None = None,
        rcpt_tos: list[str] | None = None,
        client_ip: str = "127.0.0.1",
        helo: str = "client.example",
        auth_user: str | None = None,
    ) -> InboundMessage:
        """Store ``raw`` as DATA would, handle it, deliver the outbox; the row as it ends.

        The envelope defaults to the mail's own From (sender) and To/Cc (recipients)."""
        if self._deps is None:
            raise RuntimeError("use the harness as `async with Harness(...) as h:`")
        over = screen_headers(raw, Limits.from_settings(self.settings))
        if over is not None:
            raise NotAccepted(over.reason)
        header = BytesHeaderParser().parsebytes(raw)
        if mail_from is None:
            senders = getaddresses(header.get_all("From", []))
            mail_from = senders[0][1] if senders else ""
        if rcpt_tos is None:
            found = getaddresses([*header.get_all("To", []), *header.get_all("Cc", [])])
            rcpt_tos = [address for _, address in found if address]
        envelope = spool.Envelope(
            mail_from=mail_from,
            rcpt_tos=rcpt_tos,
            client_ip=client_ip,
            helo=helo,
            tls=False,
            auth_user=auth_user,
        )
        inbound_id = await spool.store(self.sessions, raw, envelope)
        if await spool.claim_one(self.sessions, inbound_id):
            await worker.handle(self.sessions, self._deps, inbound_id)
        await self.deliver()
        async with self.sessions() as session:
            row = await session.scalar(
                select(InboundMessage).where(InboundMessage.id == inbound_id)
            )
        assert row is not None
        return row

    async def conversation(self, key: str = "issue-1") -> Conversation:
        """The conversation ``key`` as stored now: participants, comments (``.body``), and
        the bot's ``state``. Raises LookupError when there is none."""
        async with self.sessions() as session:
            found = await conversations.get(session, key)
        if found is None:
            raise LookupError(f"no conversation {key!r}")
        return found

    async def comments(self, key: str = "issue-1") -> list[tuple[str, str]]:
        """(author's address, text) of each comment of ``key``, oldest first."""
        convo = await self.conversation(key)
        return [(c.participant.email if c.participant else "", c.body) for c in convo.comments]

    @staticmethod
    def command_results(row: InboundMessage) -> list[tuple[str, str]]:
        """(command line, what became of it: done, refused, unknown, ...) of each command
        the mail held, as the transcript reports them."""
        found = (row.outcome or {}).get("commands") or []
        return [(str(item["line"]), str(item["status"])) for item in found]

    async def deliver(self) -> int:
        """Hand every outbound message that is due to the transport; how many were tried."""
        tried = 0
        while True:
            batch = await delivery.deliver_due(
                self.sessions, self.settings, limit=50, transport=self.transport
            )
            tried += batch
            if batch < 50:  # a refused row is due later, so it is not taken twice in one call
                return tried
