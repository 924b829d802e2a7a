"""The inbound spool: received messages as durable rows, claimed by workers.

:func:`store` runs inside the SMTP transaction: the server answers 250 only after it returned.
:func:`claim` hands pending rows to a worker (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
several nodes share the queue; SQLite ignores the clause and has one claimer per process).
A claimed row carries a lease: a node that dies mid-message leaves it ``processing`` with an
old ``updated_at``, and another claim takes it back after :data:`LEASE`.
:mod:`mailbot.store.finish` records how the work on a claimed row ended.
Every status change is one :mod:`mailbot.status` allows (:func:`~mailbot.status.check_transition`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot.config import Settings
from mailbot.status import check_transition
from mailbot.store import notify
from mailbot.store.blobs import BlobStore, DirectoryStore
from mailbot.store.db import OpenReader, Sessions, engine_of
from mailbot.store.models import InboundMessage, InboundStatus, utcnow

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=1)  # the default; a node uses settings.lease_seconds


class ClaimLost(Exception):
    """The row is no longer ``processing`` under this worker's claim."""


@dataclass
class Envelope:
    """What the SMTP session knew about a message, stored beside its bytes."""

    mail_from: str
    rcpt_tos: list[str]
    client_ip: str | None = None
    helo: str | None = None
    tls: bool = False
    auth_user: str | None = None


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID, ``<...>``, or None: read as parse() reads it (so ``Message-ID: 12345``
    is None here as there), from the header section only and no more than max_header_bytes
    of it, since this runs on the event loop. Never raises: the bytes are anyone's."""
    from mailbot.parse import first_message_id
    from mailbot.screen import Limits, header_end

    head = raw[: header_end(raw, 0, Limits.max_header_bytes)]
    try:
        fields = BytesHeaderParser(policy=compat32).parsebytes(head).raw_items()
    except Exception:  # noqa: BLE001 - compat32 notes defects, never raises; if it did, store anyway
        return None
    # The raw value, as parse() takes it: get() would turn 8-bit bytes into U+FFFD.
    value = next((value for name, value in fields if name.lower() == "message-id"), None)
    # msg_ids() keeps no CR, LF, NUL or other control character in an id.
    return None if value is None else first_message_id(value)


def new_values(
    raw: bytes,
    envelope: Envelope,
    spam: dict[str, Any] | None = None,
    raw_blob: str | None = None,
) -> dict[str, Any]:
    """The column values of the ``pending`` row of one received message, for
    :func:`insert_rows` (the SMTP server's group commit inserts many at once).

    ``spam`` is spamd's verdict when it was asked at DATA time (mailbot/spam/policy.py).
    ``raw_blob``: the bytes are already durable in the blob store under this key (their
    SHA-256), and the row keeps no copy. Hashing and reading the Message-ID are linear in
    the size: call it off the event loop for big mail.
    """
    return {
        "spam": spam,
        "status": InboundStatus.pending,
        "mail_from": envelope.mail_from,
        "rcpt_tos": envelope.rcpt_tos,
        "client_ip": envelope.client_ip,
        "helo": envelope.helo,
        "tls": envelope.tls,
        "auth_user": envelope.auth_user,
        "size": len(raw),
        "raw": b"" if raw_blob else raw,
        "raw_blob": raw_blob,
        "raw_sha256": raw_blob or hashlib.sha256(raw).hexdigest(),
        "message_id": message_id_of(raw),
    }


# Core, not the ORM's unit of work: measured, the ORM took 0.3 ms of the SMTP loop's CPU per
# row (a third of what the SMTP server spends on a message), this a tenth of that. The ids
# come back in the order of the rows.
_TABLE = cast(Table, InboundMessage.__table__)
_INSERT = insert(_TABLE).returning(_TABLE.c.id, sort_by_parameter_order=True)


async def insert_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> list[int]:
    """Insert new rows (:func:`new_values`) in the session's transaction; their ids, in order."""
    return list((await session.execute(_INSERT, rows)).scalars())


async def store(
    sessions: Sessions, raw: bytes, envelope: Envelope, spam: dict[str, Any] | None = None
) -> int:
    """Commit one received message on its own; returns its id. Raises if the commit fails.
    The SMTP server commits messages that arrive together in one transaction instead
    (mailbot/store/group_commit.py)."""
    async with sessions() as session, session.begin():
        (inbound_id,) = await insert_rows(session, [new_values(raw, envelope, spam)])
        await notify.announce(session)
    return inbound_id


class Claimed(NamedTuple):
    """A claimed row: its id, and the envelope the worker orders by (mailbot/pipeline/turns.py)."""

    id: int
    mail_from: str
    rcpt_tos: list[str]


# Built once; Core on a connection, not through a session: the worker claims on every
# wake, and the ORM's session costs as much CPU again as the two statements themselves.
_C = _TABLE.c
_DUE = (
    select(_C.id, _C.status, _C.mail_from, _C.rcpt_tos)
    .where(
        or_(
            and_(
                _C.status == InboundStatus.pending,
                or_(_C.next_attempt_at.is_(None), _C.next_attempt_at <= bindparam("now")),
            ),
            # a lease that ran out: its node died, or lost the database mid-message
            and_(_C.status == InboundStatus.processing, _C.updated_at < bindparam("stale")),
        )
    )
    .order_by(_C.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_TAKE = (
    update(_TABLE)
    .where(_C.id.in_(bindparam("ids", expanding=True)))
    .values(status=InboundStatus.processing, updated_at=bindparam("now"))
)


async def claim(sessions: Sessions, limit: int, lease: timedelta = LEASE) -> list[Claimed]:
    """Mark up to ``limit`` due rows ``processing`` and return them, oldest first. A row whose
    lease ran out (its node died, or lost the database mid-message) is taken back."""
    now = utcnow()
    async with engine_of(sessions).begin() as connection:
        rows = (
            await connection.execute(_DUE, {"now": now, "stale": now - lease, "limit": limit})
        ).all()
        for row in rows:
            check_transition(row.status, InboundStatus.processing)
        claimed = [Claimed(int(r.id), r.mail_from or "", list(r.rcpt_tos or [])) for r in rows]
        if claimed:
            await connection.execute(_TAKE, {"ids": [c.id for c in claimed], "now": now})
    return claimed


async def claim_one(sessions: Sessions, inbound_id: int) -> bool:
    """Claim one given row if it is pending (replay, tools); True if this call claimed it."""
    check_transition(InboundStatus.pending, InboundStatus.processing)
    async with sessions() as session, session.begin():
        result = await session.execute(
            update(InboundMessage)
            .where(InboundMessage.id == inbound_id, InboundMessage.status == InboundStatus.pending)
            .values(status=InboundStatus.processing, updated_at=utcnow())
        )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def requeue(sessions: Sessions, ids: list[int]) -> int:
    """Send messages through the pipeline again from their stored bytes (reprocess, release)."""
    async with sessions() as session, session.begin():
        found = await session.execute(
            select(InboundMessage.id, InboundMessage.status, InboundMessage.purged_at)
            .where(InboundMessage.id.in_(ids))
            .with_for_update()
        )
        for inbound_id, status, purged_at in found:
            if purged_at is not None:  # no bytes left to run through the pipeline
                raise LookupError(f"inbound message {inbound_id}: raw removed by retention")
            check_transition(status, InboundStatus.pending)
        result = await session.execute(
            update(InboundMessage)
            .where(InboundMessage.id.in_(ids))
            .values(status=InboundStatus.pending, reason=None, next_attempt_at=None, attempts=0)
        )
        await notify.announce(session)  # a worker on another node takes it now
    return int(result.rowcount)  # type: ignore[attr-defined]


async def recover(sessions: Sessions) -> int:
    """Rows left ``processing`` by a stopped process go back to ``pending`` (at start, when
    this node is the only one: one node owns a SQLite file). Returns how many."""
    check_transition(InboundStatus.processing, InboundStatus.pending)
    async with sessions() as session, session.begin():
        result = await session.execute(
            update(InboundMessage)
            .where(InboundMessage.status == InboundStatus.processing)
            .values(status=InboundStatus.pending)
        )
    return int(result.rowcount)  # type: ignore[attr-defined]


@asynccontextmanager
async def leased(sessions: Sessions, settings: Settings, inbound_id: int) -> AsyncIterator[None]:
    """Renew the claim on a ``processing`` row while work on it is in flight, so a slow
    message keeps its row and a dead node's rows come back after a short lease."""
    every = max(settings.lease_seconds / 3, 0.05)

    async def renew() -> None:
        while True:
            await asyncio.sleep(every)
            try:
                async with sessions() as session, session.begin():
                    await session.execute(
                        update(InboundMessage)
                        .where(
                            InboundMessage.id == inbound_id,
                            InboundMessage.status == InboundStatus.processing,
                        )
                        .values(updated_at=utcnow())
                    )
            except Exception as exc:  # noqa: BLE001 - the database may come back in time
                log.warning("renewing the lease of inbound %s failed: %s", inbound_id, exc)

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass(frozen=True)
class Raw:
    """A stored message's bytes: the row's own copy in memory, or a file in the blob store
    (big mail) that is read where it is needed (in an analyser process, in a thread), so
    the node's main process never holds it unless something asks (:meth:`read`)."""

    size: int
    data: bytes | None = None
    path: Path | None = None

    def read_sync(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()

    async def read(self) -> bytes:
        return self.data if self.data is not None else await asyncio.to_thread(self.read_sync)


async def load(
    sessions: Sessions, inbound_id: int, store: BlobStore | None = None
) -> tuple[bytes, Envelope]:
    """The stored bytes (from the row, or the blob store it names) and their envelope."""
    raw, envelope = await load_lazily(sessions, inbound_id, store)
    return await raw.read(), envelope


_LOAD = select(
    *(_C.raw, _C.raw_blob, _C.size, _C.purged_at, _C.mail_from, _C.rcpt_tos, _C.client_ip),
    *(_C.helo, _C.tls, _C.auth_user),
).where(_C.id == bindparam("id"))


async def load_lazily(
    sessions: OpenReader, inbound_id: int, store: BlobStore | None = None
) -> tuple[Raw, Envelope]:
    """Like :func:`load`, but the bytes of a blob in a directory stay in their file. Only
    reads: ``sessions`` may be readers (mailbot/store/db.py ``readers``), or connections."""
    async with sessions() as reads:
        row = (await reads.execute(_LOAD, {"id": inbound_id})).first()
    if row is None:
        raise LookupError(f"inbound message {inbound_id} does not exist")
    envelope = Envelope(
        mail_from=row.mail_from,
        rcpt_tos=list(row.rcpt_tos),
        client_ip=row.client_ip,
        helo=row.helo,
        tls=row.tls,
        auth_user=row.auth_user,
    )
    if row.purged_at is not None:
        raise LookupError(f"inbound message {inbound_id}: raw removed by retention")
    if row.raw_blob is None:
        return Raw(row.size, data=row.raw), envelope
    if isinstance(store, DirectoryStore):
        return Raw(row.size, path=store.path(row.raw_blob)), envelope
    if store is None:
        raise LookupError(f"inbound message {inbound_id} is in the blob store, and none was given")
    # Read from the blob store after the session is closed: no connection is held meanwhile.
    return Raw(row.size, data=await store.get(row.raw_blob)), envelope


async def load_raw(sessions: Sessions, inbound_id: int, store: BlobStore | None = None) -> bytes:
    return (await load(sessions, inbound_id, store))[0]
