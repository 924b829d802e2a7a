"""Recording what became of an outbound mail, so that a database blip never sends it twice.

Once the relay has answered 250 the mail is out, and ``sent`` must reach the database: if it
did not, the row's lease would run out and the mail would go again. So a final status is
written with retries (:data:`RECORD_DELAYS`, about a minute: a failover or a restart), and
if the database is still away, it is kept in memory: :func:`unrecorded` rows are never
leased again by this process, and :func:`flush` writes them first on every outbox pass.

What remains (and why): a process that dies between the relay's 250 and the write loses that
memory; after the lease another pass sends the mail again. That is at-least-once, like SMTP
itself (RFC 1047): the window is the time between the 250 and the commit (outcomes are
committed together every :data:`RECORD_WINDOW`, 50 ms, while a pass sends), and the
copy has the same Message-ID, which mail clients fold into one. At-most-once ("sending"
recorded first, never retried after a crash) would instead lose every mail whose transaction
was cut anywhere in its seconds-long dialogue, silently.

A final row keeps no live reply address: its stored ``raw`` and ``reply_to`` get the token's
fingerprint in the same write (mailbot/redact.py); :func:`scrub_finished` does the same for
rows that were final before this rule, or were created final (refused by the throttle).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import undefer

from mailbot.addresses import REPLY_PREFIX
from mailbot.redact import MARK, redact_bytes, redact_text
from mailbot.store.db import Sessions
from mailbot.store.models import OutboundMessage, OutboundStatus, Participant, utcnow

log = logging.getLogger(__name__)

FINAL = frozenset({OutboundStatus.sent, OutboundStatus.failed, OutboundStatus.suppressed})
RECORD_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # 60.5 s in all

# database → outbound id → the outcome still to write. Per process, per database: two nodes
# of one process on one database share it (same rows); two test databases never mix.
_unrecorded: dict[str, dict[int, Outcome]] = {}


def _database(sessions: Sessions) -> str:
    bind = sessions.kw.get("bind")
    if bind is None:
        return f"sessions-{id(sessions)}"
    return str(bind.url.render_as_string(hide_password=True))


def unrecorded(sessions: Sessions) -> frozenset[int]:
    """Rows the relay took whose outcome is not in the database yet: never to be sent again."""
    return frozenset(_unrecorded.get(_database(sessions), {}))


def scrubbed(row: OutboundMessage) -> dict[str, Any]:
    """The values that take a final row's live reply addresses out of the database (its own,
    and one a person pasted into the text a bot passed on)."""
    return {
        "raw": redact_bytes(row.raw),
        "reply_to": redact_text(row.reply_to) if row.reply_to else row.reply_to,
        "subject": redact_text(row.subject),
    }


Bounce = tuple[int, str]  # a participant refused for good, and the server's answer
RECORD_WINDOW = 0.05  # seconds outcomes of one pass wait to be committed together


class Outcome(NamedTuple):
    """What became of one row. With ``lease``, written only if the row is still ours
    (``sending`` under that lease): a retry or a give-up never overwrites what another
    node or an operator did since. Without (``sent``: a fact), written whatever."""

    outbound_id: int
    values: dict[str, Any]
    bounce: Bounce | None = None
    lease: datetime | None = None


async def write_all(sessions: Sessions, outcomes: list[Outcome]) -> None:
    """Several rows' new values (and bounces) in one transaction: one commit for a batch."""
    # Core, not ORM, UPDATEs, one executemany per set of columns: the ORM's per-row
    # bookkeeping was most of the outbox's time (benchmarks/delivery.py).
    table = cast(Table, OutboundMessage.__table__)
    groups: dict[tuple[tuple[str, ...], bool], list[dict[str, Any]]] = {}
    for outcome in outcomes:
        key = (tuple(sorted(outcome.values)), outcome.lease is not None)
        row = {"row_id": outcome.outbound_id, "row_lease": outcome.lease, **outcome.values}
        groups.setdefault(key, []).append(row)
    async with sessions() as session, session.begin():
        for (columns, ours), rows in groups.items():
            statement = update(table).where(table.c.id == bindparam("row_id"))
            if ours:
                statement = statement.where(
                    table.c.status == OutboundStatus.sending,
                    table.c.next_attempt_at == bindparam("row_lease"),
                )
            values: dict[str, Any] = {name: bindparam(name) for name in columns}
            await session.execute(statement.values(values), rows)
        for outcome in outcomes:
            if outcome.bounce is not None:
                participant_id, why = outcome.bounce
                await session.execute(
                    update(Participant)
                    .where(Participant.id == participant_id, Participant.bounced_at.is_(None))
                    .values(bounced_at=utcnow(), bounce_reason=why[:1000])
                )


def remember(sessions: Sessions, outcome: Outcome) -> None:
    """Keep a final outcome in memory until it is recorded: this process never leases that
    row again (:func:`unrecorded`)."""
    if outcome.values.get("status") in FINAL:
        _unrecorded.setdefault(_database(sessions), {})[outcome.outbound_id] = outcome


class Recorder:
    """The outcomes of one outbox pass, committed together every :data:`RECORD_WINDOW`
    seconds while any wait: a mail the server took is in the database some tens of
    milliseconds later, however long the next one takes, and a busy pass still commits
    dozens of outcomes at once."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self._pending: list[Outcome] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, outcome: Outcome) -> None:
        remember(self.sessions, outcome)
        self._pending.append(outcome)
        if self._task is None:
            self._task = asyncio.create_task(self._commit())

    async def _commit(self) -> None:
        try:
            while self._pending:
                await asyncio.sleep(RECORD_WINDOW)
                batch, self._pending = self._pending, []
                await record_all(self.sessions, batch)
        finally:
            self._task = None

    async def close(self) -> None:
        """Until everything added is recorded (or kept in memory: see :func:`record_all`)."""
        while self._task is not None:
            task = self._task
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                # We are being stopped: what is unwritten stays remembered. The write is
                # cancelled and awaited, so that nothing of it outlives the node.
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise


async def record_all(sessions: Sessions, outcomes: list[Outcome]) -> bool:
    """Write outcomes in one commit, retrying; final ones are kept in memory if the database
    stays away (a retry that is not recorded just comes back after its lease).

    True once they are in the database. Final ones are remembered before the first try, so
    that even a cancellation in the middle leaves this process knowing the mail is out."""
    pending = _unrecorded.setdefault(_database(sessions), {})
    final = [(o.outbound_id, o) for o in outcomes if o.values.get("status") in FINAL]
    pending.update(final)
    ids = ", ".join(str(o.outbound_id) for o in outcomes[:10])
    ids += "…" if len(outcomes) > 10 else ""
    for delay in (*RECORD_DELAYS, None):
        try:
            await write_all(sessions, outcomes)
        except Exception as exc:  # noqa: BLE001 - whatever the database says, keep the fact
            if delay is None:
                log.error(
                    "outbound %s: outcomes not recorded, the database is away (%s): the final "
                    "ones kept in memory, recorded on the next outbox pass, never sent again "
                    "by this process",
                    ids,
                    _brief(exc),
                )
                return False
            log.warning("recording outbound %s failed (%s); again in %s s", ids, _brief(exc), delay)
            await asyncio.sleep(delay)
        else:
            for outbound_id, _ in final:
                pending.pop(outbound_id, None)
            return True
    return False  # not reached: the loop ends in one of the returns above


async def flush(sessions: Sessions) -> None:
    """Write what the relay took while the database was away; what still fails stays."""
    pending = _unrecorded.get(_database(sessions), {})
    for outbound_id, outcome in list(pending.items()):
        try:
            await write_all(sessions, [outcome])
        except Exception as exc:  # noqa: BLE001 - the next pass tries again
            log.warning("outbound %s still not recorded (%s)", outbound_id, _brief(exc))
        else:
            pending.pop(outbound_id, None)
            status = outcome.values.get("status")
            log.info("outbound %s recorded as %s at last", outbound_id, status)


async def scrub_finished(sessions: Sessions, batch: int = 100) -> int:
    """Final rows that still hold a live reply address get its fingerprint; how many."""
    done = 0
    while True:
        async with sessions() as session, session.begin():
            rows = list(
                await session.scalars(
                    select(OutboundMessage)
                    .where(
                        OutboundMessage.status.in_(FINAL),
                        OutboundMessage.reply_to.like(f"%{REPLY_PREFIX}%"),
                        OutboundMessage.reply_to.not_like(f"%{REPLY_PREFIX}{MARK}%"),
                    )
                    .limit(batch)
                    .options(undefer(OutboundMessage.raw))
                )
            )
            changed = 0
            for row in rows:
                values = scrubbed(row)
                changed += values["reply_to"] != row.reply_to
                for name, value in values.items():
                    setattr(row, name, value)
        done += changed
        if len(rows) < batch or not changed:  # nothing left, or only what is no token at all
            return done


def _brief(exc: BaseException) -> str:
    # The driver's first line only: SQLAlchemy appends the statement and its parameters.
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:200]}"


async def recover(sessions: Sessions) -> int:
    """Rows left ``sending`` by a stopped process are due again now (at start, when this node
    is the only one: one node owns a SQLite file). What that process had handed to a server
    may go twice: the window SMTP itself leaves (see the module's docstring)."""
    async with sessions() as session, session.begin():
        result = await session.execute(
            update(OutboundMessage)
            .where(OutboundMessage.status == OutboundStatus.sending)
            .values(status=OutboundStatus.queued, next_attempt_at=None)
        )
    return int(result.rowcount)  # type: ignore[attr-defined]
