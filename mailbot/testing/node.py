"""Helpers for testing against a real running node: a relay sink, SMTP, threads, settings
(each listed, with an example, in mailbot/testing/__init__.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select

from mailbot.config import Settings
from mailbot.store import conversations, tokens
from mailbot.store.db import Sessions
from mailbot.store.models import (
    FINAL_INBOUND,
    Conversation,
    InboundMessage,
    InboundStatus,
    Participant,
    utcnow,
)

if TYPE_CHECKING:
    from mailbot.serve import Node


# An attachment for build_mail: (file name, bytes) or (file name, bytes, content type).
Attached = tuple[str, bytes] | tuple[str, bytes, str]


class Store(Protocol):
    """What the thread helpers need: a running node, or an in-process ``Harness``."""

    @property
    def settings(self) -> Settings: ...

    @property
    def sessions(self) -> Sessions: ...


@dataclass
class SinkedMail:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        return BytesParser(policy=default_policy).parsebytes(self.raw)

    @property
    def text(self) -> str:
        body = self.message.get_body(("plain",))
        return str(body.get_content()) if body is not None else ""

    @property
    def html(self) -> str | None:
        """The HTML alternative (a body the bot wrote in Markdown), or None."""
        body = self.message.get_body(("html",))
        return str(body.get_content()) if body is not None else None

    @property
    def files(self) -> list[tuple[str | None, str, bytes]]:
        """The attachments: (file name, content type, decoded bytes) each."""
        found = []
        for part in self.message.iter_attachments():
            data = part.get_payload(decode=True)
            found.append((part.get_filename(), part.get_content_type(), data))
        return [(n, t, d if isinstance(d, bytes) else b"") for n, t, d in found]


class SmtpSink:
    """A relay for tests: accepts everything (or answers ``reply`` to DATA) and keeps it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.received: list[SinkedMail] = []
        self.data_reply: str | None = None  # e.g. "451 4.3.0 try later" or "550 5.1.1 no"
        self._server: asyncio.Server | None = None
        self._arrived = asyncio.Event()
        self._sessions: list[SMTP] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        self.received.append(
            SinkedMail(
                envelope.mail_from or "", list(envelope.rcpt_tos), envelope.original_content or b""
            )
        )
        self._arrived.set()
        return "250 2.0.0 OK"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._session, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def _session(self) -> SMTP:
        session = SMTP(self, hostname="sink.test", decode_data=False)
        # Forget only sessions whose handler has ended (a closed connection's may still run).
        self._sessions = [
            s
            for s in self._sessions
            if s._handler_coroutine is None or not s._handler_coroutine.done()
        ]
        self._sessions.append(session)
        return session

    async def stop(self) -> None:
        """Stop listening and end every session still open (a client's kept connection):
        a stopped sink leaves nothing running."""
        if self._server is not None:
            self._server.close()
            handlers = []
            for session in self._sessions:
                if session.transport is not None:
                    session.transport.close()
                if (task := session._handler_coroutine) is not None:
                    handlers.append(task)
            await asyncio.gather(*handlers, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SmtpSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[SinkedMail]:
        """Wait until at least ``count`` mails arrived; raise with what came if not."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.received

    def to(self, address: str) -> list[SinkedMail]:
        address = address.lower()
        return [m for m in self.received if address in (r.lower() for r in m.rcpt_tos)]


def settings_for(tmp_path: Path, relay: SmtpSink | str | None = None, **overrides: Any) -> Settings:
    """Settings for a node in a test: its own SQLite file, free ports, fast retries."""
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'mailbot.db'}",
        "smtp_port": 0,
        "http_port": 0,
        "cpu_workers": 0,
        "poll_seconds": 0.2,
        "retry_base_seconds": 0.1,
        "home": tmp_path,  # the self-signed TLS pair, blobs, keys, whatever the database
        "relay": relay.url if isinstance(relay, SmtpSink) else relay,
        # SPF/DKIM/DMARC never ask the network in a test: NXDOMAIN unless dns_zone says
        # otherwise (pass dns_zone={"example.org": ["TXT v=spf1 ip4:127.0.0.1 -all"]}).
        "dns": "offline",
    }
    values.update(overrides)
    return Settings(**values)


def build_mail(
    sender: str,
    to: str,
    body: str,
    *,
    subject: str = "Re: test",
    html: str | None = None,
    headers: dict[str, str] | None = None,
    message_id: str | None = None,
    commands: Sequence[str] = (),
    quote: str | None = None,
    attachments: Sequence[Attached] = (),
) -> bytes:
    """A mail in one line: ``build_mail("ann@example.com", address, "Thanks!",
    commands=["/close"], quote="Can you look?", attachments=[("log.txt", b"...")])``.

    ``commands`` are lines put before the text; ``quote`` is the earlier mail, quoted under
    it as a client does (``On <date>, <to> wrote:`` and ``> `` lines); an attachment is
    (name, bytes) or (name, bytes, content type)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = message_id or make_msgid(domain="client.example")
    for name, value in (headers or {}).items():
        msg[name] = value
    text = "\n".join([*commands, body]) if commands else body
    if quote is not None:
        quoted = "\n".join(f"> {line}" if line else ">" for line in quote.splitlines())
        text = f"{text.rstrip()}\n\nOn Mon, 2 Mar 2026 at 10:00, {to} wrote:\n{quoted}\n"
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for attached in attachments:
        name, data, *kind = attached
        main, _, sub = (kind[0] if kind else "application/octet-stream").partition("/")
        msg.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return msg.as_bytes()


@dataclass
class SendResult:
    mail_from_code: int
    rcpt_codes: list[tuple[int, str]] = field(default_factory=list)
    data_code: int | None = None
    data_message: str = ""

    @property
    def inbound_id(self) -> int:
        found = re.search(r"queued as (\d+)", self.data_message)
        if found is None:
            raise AssertionError(f"not queued: {self.data_code} {self.data_message}")
        return int(found.group(1))


async def smtp_send(
    port: int,
    mail_from: str,
    rcpt_tos: list[str],
    raw: bytes,
    host: str = "127.0.0.1",
    **client_options: Any,
) -> SendResult:
    """One SMTP transaction, recording the server's reply to each command; never raises
    for a refusal (that is what tests look at)."""
    client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, **client_options)
    async with client:
        response = await client.mail(mail_from)
        result = SendResult(response.code)
        accepted = 0
        for rcpt in rcpt_tos:
            try:
                reply = await client.rcpt(rcpt)
                result.rcpt_codes.append((reply.code, reply.message))
                accepted += 1
            except aiosmtplib.SMTPRecipientRefused as exc:
                result.rcpt_codes.append((exc.code, exc.message))
        if accepted:
            try:
                reply = await client.data(raw)
                result.data_code, result.data_message = reply.code, reply.message
            except aiosmtplib.SMTPDataError as exc:
                result.data_code, result.data_message = exc.code, exc.message
            except aiosmtplib.SMTPResponseException as exc:
                result.data_code, result.data_message = exc.code, exc.message
    return result


@dataclass
class Thread:
    """A conversation with participants, and a fresh reply address for each."""

    conversation: Conversation
    participants: dict[str, Participant]
    addresses: dict[str, str]  # person → their reply address

    @property
    def key(self) -> str:
        return self.conversation.key

    @property
    def ids(self) -> dict[str, int]:
        return {person: p.id for person, p in self.participants.items()}


async def make_thread(
    node: Store,
    key: str = "issue-1",
    people: tuple[str, ...] = ("alice", "bob", "carol"),
    *,
    bot: str = "comments",
    domain: str = "example.com",
) -> Thread:
    """A conversation ``key`` whose participants are ``<person>@<domain>``."""
    async with node.sessions() as session, session.begin():
        convo = await conversations.ensure(
            session, key, node.settings.domain, subject=f"Issue {key}", bot=bot
        )
        found: dict[str, Participant] = {}
        addresses: dict[str, str] = {}
        for person in people:
            participant = await conversations.ensure_participant(
                session, convo, f"{person}@{domain}", person.title()
            )
            token = await tokens.issue(session, participant, timedelta(days=30))
            found[person] = participant
            addresses[person] = tokens.reply_address(token, node.settings.domain)
    return Thread(convo, found, addresses)


async def reply(node: Node, sender: str, address: str, body: str | bytes) -> InboundMessage:
    """Send one reply (a text, or a whole message) over SMTP and wait until it is handled."""
    raw = body if isinstance(body, bytes) else build_mail(sender, address, body)
    result = await smtp_send(node.smtp_port, sender, [address], raw)
    return await wait_for_status(node.sessions, result.inbound_id)


async def wait_for_status(
    sessions: Sessions,
    inbound_id: int,
    statuses: frozenset[InboundStatus] = FINAL_INBOUND,
    timeout: float = 30.0,
) -> InboundMessage:
    """Poll until the message reaches one of ``statuses``; the row as it then is."""
    async with asyncio.timeout(timeout):
        while True:
            async with sessions() as session:
                row = await session.scalar(
                    select(InboundMessage).where(InboundMessage.id == inbound_id)
                )
            if row is not None and row.status in statuses:
                return row
            await asyncio.sleep(0.05)
