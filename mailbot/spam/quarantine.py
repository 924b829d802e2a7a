"""What an operator does with quarantined mail, and how spamd learns from their judgement.

``mailbot quarantine list|release ID|delete ID`` and ``mailbot spam learn --spam|--ham ID``
call these. A release marks the verdict as overruled and sends the stored raw message
through the pipeline again (it is matched, authorized and dispatched like new mail, but not
quarantined again). Learning sends the stored raw message to spamd's Bayes filter (TELL)
and records what it was taught on the row.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import delete as sql_delete

from mailbot.spam.client import SpamChecker
from mailbot.store import spool
from mailbot.store.blobs import BlobStore
from mailbot.store.db import Sessions
from mailbot.store.models import InboundMessage, InboundStatus, utcnow


async def _quarantined(sessions: Sessions, inbound_id: int) -> InboundMessage:
    """The row, or :class:`LookupError` saying why it is not one in quarantine."""
    async with sessions() as session:
        row = await session.get(InboundMessage, inbound_id)
    if row is None:
        raise LookupError(f"there is no inbound message {inbound_id}")
    if row.status != InboundStatus.quarantined:
        raise LookupError(f"message {inbound_id} is {row.status.value}, not quarantined")
    return row


async def release(sessions: Sessions, inbound_id: int) -> None:
    """Overrule the verdict and queue the message for the pipeline again."""
    await _quarantined(sessions, inbound_id)
    async with sessions() as session, session.begin():
        row = await session.get(InboundMessage, inbound_id)
        assert row is not None
        row.spam = {**(row.spam or {}), "released_at": utcnow().isoformat()}
    await spool.requeue(sessions, [inbound_id])


async def delete(sessions: Sessions, inbound_id: int) -> None:
    """Delete a quarantined message for good (only a quarantined one)."""
    await _quarantined(sessions, inbound_id)
    async with sessions() as session, session.begin():
        await session.execute(
            sql_delete(InboundMessage).where(
                InboundMessage.id == inbound_id,
                InboundMessage.status == InboundStatus.quarantined,
            )
        )


async def learn(
    sessions: Sessions,
    checker: SpamChecker,
    inbound_id: int,
    kind: Literal["spam", "ham"],
    store: BlobStore | None = None,
) -> dict[str, Any]:
    """Teach spamd that a stored message is spam or ham; what was recorded on the row.

    Raises :class:`LookupError` for an unknown id, and
    :class:`~mailbot.errors.SpamdUnavailable` if spamd cannot be told.
    """
    raw = await spool.load_raw(sessions, inbound_id, store)
    learned = await checker.learn(raw, kind)
    record = {"as": kind, "at": utcnow().isoformat(), "new_to_spamd": learned}
    async with sessions() as session, session.begin():
        row = await session.get(InboundMessage, inbound_id)
        assert row is not None
        row.spam = {**(row.spam or {"scanned": False}), "learned": record}
    return record
