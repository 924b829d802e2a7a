"""Recording what became of an outbound mail, so that a database blip never sends it twice.

Once the relay has answered 250 the mail is out, and ``sent`` must reach the database: if it
did not, the row's lease would run out and the mail would go again. So a final status is
written with retries (:data:`RECORD_DELAYS`, about a minute: a failover or a restart), and
if the database is still away, it is kept in memory: :func:`unrecorded` rows are never
leased again by this process, and :func:`flush` writes them first on every outbox pass.

What remains (and why): a process that dies between the relay's 250 and the write loses that
memory; after the lease another pass sends the mail again. That is at-least-once, like SMTP
itself (RFC 1047): the window is the milliseconds between the 250 and the commit, and the
copy has the same Message-ID, which mail clients fold into one. At-most-once ("sending"
recorded first, never retried after a crash) would instead lose every mail whose transaction
was cut anywhere in its seconds-long dialogue, silently.

A final row keeps no live reply address: its stored ``raw`` and ``reply_to`` get the token's
fingerprint in the same write (mailbot/redact.py); :func:`scrub_finished` does the same for
rows that were final before this rule, or were created final (refused by the throttle).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import undefer

from mailbot.addresses import REPLY_PREFIX
from mailbot.redact import MARK, redact_bytes, redact_text
from mailbot.store.db import Sessions
from mailbot.store.models import OutboundMessage, OutboundStatus

log = logging.getLogger(__name__)

FINAL = frozenset({OutboundStatus.sent, OutboundStatus.failed})
RECORD_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # 60.5 s in all

# database → outbound id → the values still to write. Per process, per database: two nodes
# of one process on one database share it (same rows); two test databases never mix.
_unrecorded: dict[str, dict[int, dict[str, Any]]] = {}


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


async def write(sessions: Sessions, outbound_id: int, values: dict[str, Any]) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            update(OutboundMessage).where(OutboundMessage.id == outbound_id).values(**values)
        )


async def record_final(sessions: Sessions, outbound_id: int, values: dict[str, Any]) -> bool:
    """Write a final outcome, retrying; kept in memory if the database stays away.

    True once it is in the database. Remembered before the first try, so that even a
    cancellation in the middle leaves this process knowing the mail is out."""
    pending = _unrecorded.setdefault(_database(sessions), {})
    pending[outbound_id] = values
    for delay in (*RECORD_DELAYS, None):
        try:
            await write(sessions, outbound_id, values)
        except Exception as exc:  # noqa: BLE001 - whatever the database says, keep the fact
            if delay is None:
                log.error(
                    "outbound %s is %s but the database is away (%s): kept in memory, "
                    "recorded on the next outbox pass, never sent again by this process",
                    outbound_id,
                    values.get("status"),
                    _brief(exc),
                )
                return False
            log.warning(
                "recording outbound %s failed (%s); again in %s s", outbound_id, _brief(exc), delay
            )
            await asyncio.sleep(delay)
        else:
            pending.pop(outbound_id, None)
            return True
    return False  # not reached: the loop ends in one of the returns above


async def flush(sessions: Sessions) -> None:
    """Write what the relay took while the database was away; what still fails stays."""
    pending = _unrecorded.get(_database(sessions), {})
    for outbound_id, values in list(pending.items()):
        try:
            await write(sessions, outbound_id, values)
        except Exception as exc:  # noqa: BLE001 - the next pass tries again
            log.warning("outbound %s still not recorded (%s)", outbound_id, _brief(exc))
        else:
            pending.pop(outbound_id, None)
            log.info("outbound %s recorded as %s at last", outbound_id, values.get("status"))


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


async def cancel(sessions: Sessions, outbound_id: int) -> OutboundMessage:
    """An operator's cancel: a ``held`` or ``queued`` mail becomes ``failed`` ("cancelled by
    an operator"), scrubbed like every final row. The row as it then is; :class:`LookupError`
    for an unknown id, :class:`ValueError` for a mail that is final already. A mail the relay
    is taking at this moment may still be recorded ``sent``: that is what happened to it."""
    async with sessions() as session, session.begin():
        row = await session.scalar(
            select(OutboundMessage)
            .where(OutboundMessage.id == outbound_id)
            .with_for_update()
            .options(undefer(OutboundMessage.raw))
        )
        if row is None:
            raise LookupError(f"there is no outbound message {outbound_id}")
        if row.status in FINAL:
            raise ValueError(f"outbound message {outbound_id} is {row.status.value} already")
        for name, value in scrubbed(row).items():
            setattr(row, name, value)
        row.status, row.reason = OutboundStatus.failed, "cancelled by an operator"
    return row


def _brief(exc: BaseException) -> str:
    # The driver's first line only: SQLAlchemy appends the statement and its parameters.
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:200]}"
