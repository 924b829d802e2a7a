"""The stages one stored message goes through, in order, and nothing else.

Phase 1, outside any transaction: :func:`load` reads the message and what we sent its writer
in one go, then :func:`read` (all three wait on something else, so they overlap): analyse
(screen, parse and strip, in another process), the spam scan (spamd), and the sender check
(SPF, DKIM, then DMARC on the From the analyser read).

Phase 2, :func:`act`, in the row's one transaction, :data:`STAGES` in order:

    classify (a bounce? record it) → scanned? → match → loop guard → quarantine?
      → authorize → duplicate? → empty? → dispatch to the bot

Every stage is a :class:`Stage`: it reads the :class:`InFlight` message, adds to its
:class:`Outcome`, or refuses it with a :class:`Rejection`. The row is written in one place,
:func:`_record`; :mod:`mailbot.store.finish` turns a refusal into
the stored status, and :mod:`mailbot.outbound.notices` decides whether the sender is told.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from mailbot.app import Mailbot
from mailbot.bot import Bot
from mailbot.config import Settings
from mailbot.errors import Rejection
from mailbot.outbound import bounces, notices
from mailbot.pipeline import dispatch, duplicates, loops
from mailbot.pipeline.analyse import Analysis
from mailbot.pipeline.classify import classify
from mailbot.pipeline.match import Match, match
from mailbot.pipeline.sent import sent_to_replier
from mailbot.spam import policy as spam_policy
from mailbot.spam.client import SpamChecker
from mailbot.status import RefusalCode
from mailbot.store import attachments, spool
from mailbot.store.blobs import BlobStore
from mailbot.store.db import Sessions, engine_of
from mailbot.store.models import InboundMessage
from mailbot.store.spool import Envelope, Raw
from mailbot.trust.authenticate import (
    Authentication,
    annotate,
    check_sender,
    from_domains_of,
    judge_from,
)
from mailbot.trust.authorize import authorize
from mailbot.trust.resolver import resolver_for

T = TypeVar("T")


@dataclass(frozen=True)
class Deps:
    """What the pipeline needs from the running node."""

    settings: Settings
    app: Mailbot
    # Parse and strip, off the loop: the bytes, or the path of a file holding them, and the
    # mails we sent the person who wrote it (mailbot/pipeline/sent.py), cut against.
    analyse: Callable[[bytes | Path, Sequence[bytes]], Coroutine[Any, Any, Analysis]]
    spam: SpamChecker | None = None  # None: spam scanning is off
    blobs: BlobStore | None = None  # where big raw mail is kept; None: always in the row
    # Sessions for what only reads (a stored message's bytes): on SQLite, connections beside
    # the one writer (mailbot/store/db.py ``readers``). None: the writer's.
    readers: Sessions | None = None


class Loaded(NamedTuple):
    """What phase 1 starts from: the stored message, and the beginnings of the last mails
    we sent the participant whose reply address it came to (mailbot/pipeline/sent.py)."""

    raw: Raw
    envelope: Envelope
    sent: list[bytes]


@dataclass(frozen=True)
class Read:
    """What phase 1 learnt: the message as read, and who really sent it."""

    raw: Raw
    analysis: Analysis
    authentication: Authentication
    timeline: list[dict[str, Any]] = field(default_factory=list)  # see Step


@dataclass
class Step:
    """One stage's entry in the message's timeline (the page shows it): when it started,
    how long it took, and how it ended."""

    stage: str
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=time.perf_counter)

    def done(self, result: str = "ok") -> dict[str, Any]:
        ms = round((time.perf_counter() - self.started) * 1000, 1)
        return {"stage": self.stage, "at": self.at.isoformat(), "ms": ms, "result": result}


async def _timed(timeline: list[dict[str, Any]], stage: str, work: Coroutine[Any, Any, T]) -> T:
    step = Step(stage)
    try:
        result = await work
    except Rejection as refusal:
        timeline.append(step.done(f"refused: {refusal.code}"))
        raise
    except BaseException as failure:
        timeline.append(step.done(f"failed: {type(failure).__name__}"))
        raise
    timeline.append(step.done())
    return result


async def load(sessions: Sessions, deps: Deps, inbound_id: int) -> Loaded:
    """The stored message, and what we sent whoever wrote it: one connection, no session
    (both are Core statements, and a session would cost as much CPU again)."""
    async with engine_of(deps.readers or sessions).connect() as connection:

        def held() -> nullcontext[AsyncConnection]:
            return nullcontext(connection)

        raw, envelope = await spool.load_lazily(held, inbound_id, deps.blobs)
        sent = await sent_to_replier(held, deps.settings.domains, envelope.rcpt_tos)
    return Loaded(raw, envelope, sent)


async def read(sessions: Sessions, deps: Deps, inbound_id: int, loaded: Loaded) -> Read:
    """Phase 1. Raises the :class:`Rejection` of a hostile or oversized message (refused once,
    never retried), else the first failure (recorded on the row, retried with backoff).

    Big mail (``raw`` is a file in the blob store) is read where it is worked on: by the
    analyser process, by the spam scan, by the sender check's thread, one after the other,
    so that no two copies of it are alive at once and the main process keeps none between."""
    raw, envelope, sent = loaded
    resolver = resolver_for(deps.settings)
    timeline: list[dict[str, Any]] = []
    sender = functools.partial(
        _check_sender,
        raw,
        client_ip=envelope.client_ip,
        helo=envelope.helo,
        mail_from=envelope.mail_from,
        resolver=resolver,
        smtp_auth=envelope.auth_user,
    )
    source = raw.data if raw.data is not None else raw.path
    assert source is not None

    async def analysed() -> Analysis:
        return await deps.analyse(source, sent)

    steps: list[tuple[str, Callable[[], Coroutine[Any, Any, Any]]]] = [
        ("parse and strip", analysed),
        ("spam", lambda: spam_policy.scan_row(sessions, deps.spam, inbound_id, raw.read)),
        ("SPF and DKIM", lambda: asyncio.to_thread(sender)),
    ]
    done: list[Any] = []
    try:
        if raw.data is None:  # big: one at a time
            done = [await _timed(timeline, stage, step()) for stage, step in steps]
        else:
            # A task group, not gather: if one fails, the others are cancelled and awaited,
            # never left running on their own (a spam scan outliving its message, or its node).
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(_timed(timeline, n, step())) for n, step in steps]
            done = [task.result() for task in tasks]
    except* Rejection as refused:
        raise refused.exceptions[0] from None
    except* Exception as failures:
        raise failures.exceptions[0] from None
    analysis, _scanned, checked = done
    # DMARC needs the From, which only the analyser has read (never this event loop).
    dmarc = asyncio.to_thread(
        judge_from,
        checked,
        from_domains_of(analysis.parsed),
        resolver,
        deps.settings.hostname,
        envelope.mail_from,
    )
    auth = await _timed(timeline, "DMARC", dmarc)
    return Read(raw, analysis, auth, timeline)


def _check_sender(raw: Raw, **kwargs: Any) -> Authentication:
    # In a thread: a file in the blob store is read here, and let go when the check returns.
    return check_sender(raw.read_sync(), **kwargs)


@dataclass
class Outcome:
    """What the stages decided about one message: the row's ``outcome`` column, typed."""

    classification: str | None = None
    bounce: dict[str, Any] | None = None  # a DSN's report (mailbot/outbound/bounces.py)
    via: str | None = None  # how it matched: "token", "references" or "route"
    notice: dict[str, Any] | None = None  # whether the sender was told why, and why not
    bot: dict[str, Any] = field(default_factory=dict)  # what the bot's Context recorded
    timeline: list[dict[str, Any]] = field(default_factory=list)  # each stage's Step
    cut: dict[str, str | None] | None = None  # the rules that cut quote and signature

    def to_json(self) -> dict[str, Any]:
        known = {
            "cut": self.cut,
            "classification": self.classification,
            "bounce": self.bounce,
            "via": self.via,
            "notice": self.notice,
            "timeline": self.timeline or None,
        }
        return {**{k: v for k, v in known.items() if v is not None}, **self.bot}


@dataclass
class InFlight:
    """One message in phase 2: what the stages read, and what they add."""

    session: AsyncSession
    row: InboundMessage  # read by the stages; written only by _record
    read: Read
    deps: Deps
    outcome: Outcome = field(default_factory=Outcome)
    found: Match | None = None  # set by _match
    # The spam column as the stages decide it (the verdict was stored in phase 1 or at
    # DATA time); written with the rest by _record.
    spam: dict[str, Any] | None = None

    @property
    def bot_class(self) -> type[Bot]:
        assert self.found is not None, "a stage after _match"
        return self.deps.app.bot(self.found.bot)


class Stage(Protocol):
    """A step of phase 2: adds to ``mail``, or raises a :class:`Rejection`."""

    async def __call__(self, mail: InFlight, /) -> None: ...


async def _classify(mail: InFlight) -> None:
    kind = classify(mail.read.analysis.parsed, mail.row.mail_from, mail.deps.settings.domains)
    mail.outcome.classification = kind.kind
    if kind.kind == "bounce":
        raw = await mail.read.raw.read()
        report = await bounces.record(
            mail.session, raw, list(mail.row.rcpt_tos), mail.deps.settings.domains
        )
        mail.outcome.bounce = report
        raise Rejection(f"{kind.reason}: {bounces.summary(report)}", code=RefusalCode.bounce)
    if kind.automatic:
        raise Rejection(
            f"automatic mail, never acted on or answered: {kind.reason}",
            code=RefusalCode(kind.kind),
        )


async def _require_scan(mail: InFlight) -> None:
    # The verdict was stored before this transaction (at DATA time or in phase 1).
    mail.spam = spam_policy.require_scan(mail.spam, scanning=mail.deps.spam is not None)


async def _match(mail: InFlight) -> None:
    deps = mail.deps
    mail.found = await match(
        mail.session, deps.app, deps.settings.domains, mail.row.rcpt_tos, mail.read.analysis.parsed
    )
    mail.outcome.via = mail.found.via
    if mail.found.bot not in deps.app.bots:  # its bot was turned off, or left the app
        raise Rejection(
            f"the bot {mail.found.bot!r} of this conversation does not run here",
            code=RefusalCode.no_route,
        )


async def _loop_guard(mail: InFlight) -> None:
    assert mail.found is not None
    if mail.found.conversation is not None and mail.bot_class.loop_guard:
        await loops.check(mail.session, mail.deps.settings, mail.found.conversation.id)


async def _quarantine(mail: InFlight) -> None:
    assert mail.found is not None
    bot = mail.deps.app.bots.get(mail.found.bot)
    mail.spam = spam_policy.apply(mail.spam, mail.deps.settings, bot)
    spam_policy.hold(mail.spam)


async def _authorize(mail: InFlight) -> None:
    assert mail.found is not None
    # A trusted submitter (SMTP AUTH) is known without DNS; the owner check still applies.
    proof = None if mail.row.auth_user else mail.read.authentication
    policy = mail.bot_class.sender_policy
    authorize(mail.found, mail.read.analysis.parsed, proof, policy, mail.deps.settings)


async def _duplicate(mail: InFlight) -> None:
    assert mail.found is not None
    message_id = mail.read.analysis.parsed.message_id
    earlier = await duplicates.earlier_copy(mail.session, mail.row, message_id, mail.found.bot)
    if earlier is not None:
        raise Rejection(
            f"duplicate of message {earlier} (same Message-ID)", code=RefusalCode.duplicate
        )


async def _empty(mail: InFlight) -> None:
    if not mail.read.analysis.reply and not mail.bot_class.accepts_empty:
        raise Rejection(
            "empty reply: nothing was left after removing the quoted text and signature",
            code=RefusalCode.empty_reply,
        )


async def _dispatch(mail: InFlight) -> None:
    await dispatch.run_bot(mail)


STAGES: tuple[Stage, ...] = (
    _classify,
    _require_scan,
    _match,
    _loop_guard,
    _quarantine,
    _authorize,
    _duplicate,
    _empty,
    _dispatch,
)


async def act(session: AsyncSession, row: InboundMessage, read: Read, deps: Deps) -> None:
    """Phase 2, inside the row's one transaction. A refusal may also tell its sender why,
    when that is safe (mailbot/outbound/notices.py); the notice commits with it."""
    mail = InFlight(session, row, read, deps, spam=row.spam)
    mail.outcome.timeline = list(read.timeline)
    mail.outcome.cut = read.analysis.cut
    # Kept whatever the stages decide: the API shows a refused mail's attachments too. A
    # row never processed before (no outcome yet) has no earlier rows to replace.
    if read.analysis.attachments or row.outcome is not None:
        await attachments.record(session, row.id, read.analysis.attachments)
    try:
        for stage in STAGES:
            name = getattr(stage, "__name__", type(stage).__name__).strip("_")
            await _timed(mail.outcome.timeline, name, stage(mail))
    except Rejection as refusal:
        _record(mail)
        if not refusal.final:
            raise  # unscanned: scanned and decided again later, told nothing yet
        parsed = read.analysis.parsed
        mail.outcome.notice = await notices.consider(session, deps.settings, row, parsed, refusal)
        _record(mail)
        raise
    _record(mail)


def _record(mail: InFlight) -> None:
    """The one place the stages' findings are written onto the row."""
    row, analysis, auth = mail.row, mail.read.analysis, mail.read.authentication
    settings = mail.deps.settings
    row.authentication = auth.to_json()
    row.parsed = annotate(analysis.parsed_json, row.authentication, settings.hostname)
    row.message_id = analysis.parsed.message_id or row.message_id
    row.reply_text = analysis.reply
    row.signature = analysis.signature
    row.quote = analysis.quote
    if mail.found is not None:
        found = mail.found
        row.conversation_id = found.conversation.id if found.conversation else None
        row.participant_id = found.participant.id if found.participant else None
        row.bot = found.bot
    row.outcome = mail.outcome.to_json()
    row.spam = mail.spam
