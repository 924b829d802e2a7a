"""How the work on a claimed row ends: the one place its final status (or its retry) is set.

:func:`processing` wraps the work on one row in a transaction of its own; :func:`together`
does the same for several rows in one transaction and one commit, each in a savepoint of its
own, so that a slow commit (an fsync) is paid once for all the messages ready at the same
moment and one message's failure rolls back only its own writes. :func:`record_failure` is a
failure outside any of them (phase 1). Every change is one :mod:`mailbot.status` allows.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot.config import Settings
from mailbot.errors import Busy, Rejection
from mailbot.redact import hide_secrets
from mailbot.retry import backoff
from mailbot.status import check_transition
from mailbot.store import webhooks
from mailbot.store.db import HOLDING, Sessions, writer_wanted
from mailbot.store.models import InboundMessage, InboundStatus, utcnow
from mailbot.store.spool import ClaimLost

log = logging.getLogger(__name__)

MAX_TRACEBACK = 8000  # characters of a failure's traceback kept on its row

# The work on one row, inside the transaction: returns normally, or raises a Rejection.
Work = Callable[[AsyncSession, InboundMessage], Awaitable[None]]


@asynccontextmanager
async def processing(
    sessions: Sessions, settings: Settings, inbound_id: int
) -> AsyncIterator[tuple[AsyncSession, InboundMessage]]:
    """Run the work on one row in one transaction and record how it ended.

    Returns normally → ``delivered`` (unless the work set another final status itself);
    :class:`Rejection` → its status (``rejected`` or ``bounced``) with its reason, and what
    the work stored before the refusal (parsed JSON, reply text) is kept; any other error →
    rolled back, then ``pending`` with backoff, or ``failed`` with the error once
    ``max_attempts`` is reached.
    """
    async with sessions() as session:
        # Locked for the transaction: no other node can claim it back meanwhile.
        row = await session.get(InboundMessage, inbound_id, with_for_update=True)
        if row is None:
            raise LookupError(f"inbound message {inbound_id} does not exist")
        _still_ours(row)
        try:
            yield session, row
        except Rejection as refusal:
            await _ended(session, settings, row, refusal)
            await session.commit()
            return
        except Exception as exc:
            await session.rollback()
            await record_failure(sessions, settings, inbound_id, exc)
            return
        await _ended(session, settings, row, None)
        await session.commit()


async def together(
    sessions: Sessions, settings: Settings, works: Sequence[tuple[int, Work]]
) -> list[InboundMessage | Exception]:
    """The work on several rows in one transaction, in the order given: for each, its row as
    committed (its status set as :func:`processing` sets it, a failure recorded as a retry),
    or the :class:`ClaimLost` or :class:`LookupError` that kept it from being worked on.

    The list may be shorter than ``works``; the rest were not begun (or were undone), and
    the caller hands them in again:

    - when the SMTP server waits to commit mail it is to say 250 for
      (:func:`mailbot.store.db.writer_wanted`), the transaction ends after the first;
    - after the first, a message whose conversation another node's transaction holds is not
      waited for (:class:`~mailbot.errors.Busy`): two batches could wait for each other.

    Raises when the transaction cannot be committed (or a savepoint cannot be rolled back):
    then nothing of any of them was kept, and the caller does each on its own."""
    ids = [inbound_id for inbound_id, _ in works]
    async with sessions() as session:
        query = select(InboundMessage).where(InboundMessage.id.in_(ids))
        rows = {row.id: row for row in await session.scalars(query.with_for_update())}
        ended: list[InboundMessage | Exception] = []
        for inbound_id, work in works:
            if ended and await writer_wanted(session):
                break
            row = rows.get(inbound_id)
            try:
                if row is None:
                    raise LookupError(f"inbound message {inbound_id} does not exist")
                _still_ours(row)
            except (LookupError, ClaimLost) as lost:
                ended.append(lost)
                continue
            savepoint = await session.begin_nested()
            try:
                await work(session, row)
            except Busy:  # another node holds its conversation: undone, handed back as is
                await savepoint.rollback()
                await session.refresh(row)
                break
            except Rejection as refusal:
                await _ended(session, settings, row, refusal)
            except Exception as exc:  # noqa: BLE001 - this one is retried, the others go on
                await savepoint.rollback()
                await session.refresh(row)  # what the savepoint changed on it was undone
                _retry_or_fail(row, settings, exc)
            else:
                await _ended(session, settings, row, None)
            if savepoint.is_active:
                await savepoint.commit()
            ended.append(row)
            session.info[HOLDING] = True  # what comes next must not wait for a lock
        await session.commit()
    return ended


def _still_ours(row: InboundMessage) -> None:
    if row.status != InboundStatus.processing:
        # Our lease ran out (a long database outage) and another node has it now, or
        # has finished it: acting on it here too would act twice.
        raise ClaimLost(f"inbound message {row.id} is {row.status.value}, not ours")


async def _ended(
    session: AsyncSession, settings: Settings, row: InboundMessage, refusal: Rejection | None
) -> None:
    """The status the work ended in: its refusal's, or ``delivered`` (unless the work set a
    final status itself); the webhooks' events for it commit with it. The try is counted
    here, not before the work: the row is then written once, with the work's other changes."""
    row.attempts += 1
    if refusal is not None:
        check_transition(row.status, refusal.status)
        row.status = refusal.status
        row.reason = refusal.reason
        row.outcome = {**(row.outcome or {}), "code": refusal.code}
    elif row.status == InboundStatus.processing:
        check_transition(row.status, InboundStatus.delivered)
        row.status = InboundStatus.delivered
        row.reason = None
    await webhooks.queue_events(session, settings, row)


async def record_failure(
    sessions: Sessions, settings: Settings, inbound_id: int, exc: Exception
) -> None:
    """A try that failed for a reason that may pass: retry with backoff, or give up."""
    async with sessions() as session:
        row = await session.get(InboundMessage, inbound_id, with_for_update=True)
        assert row is not None
        if row.status != InboundStatus.processing:
            # Our claim ran out and another node took the row (and may have finished it).
            log.warning("inbound %s is %s now; not recording %r", inbound_id, row.status, exc)
            return
        _retry_or_fail(row, settings, exc)
        await session.commit()


def _retry_or_fail(row: InboundMessage, settings: Settings, exc: Exception) -> None:
    """Count the failed try (the work's own writes were rolled back) and retry or give up."""
    row.attempts += 1
    inbound_id = row.id
    reason = hide_secrets(f"{type(exc).__name__}: {exc}")[:2000]
    # Where it failed, for whoever fixes the bot (the page, the API and `mailbot message`
    # show the outcome; no local variables, and a password an exception quotes is hidden).
    where = hide_secrets("".join(traceback.format_exception(exc)))[-MAX_TRACEBACK:]
    row.outcome = {**(row.outcome or {}), "error": {"attempt": row.attempts, "traceback": where}}
    if row.attempts >= settings.max_attempts:
        log.exception("inbound %s failed for good", inbound_id, exc_info=exc)
        check_transition(row.status, InboundStatus.failed)
        row.status = InboundStatus.failed
        row.reason = f"gave up after {row.attempts} attempts: {reason}"
    else:
        log.warning(
            "inbound %s failed (attempt %s), will retry: %s", inbound_id, row.attempts, reason
        )
        check_transition(row.status, InboundStatus.pending)
        row.status = InboundStatus.pending
        row.reason = f"retrying: {reason}"
        row.next_attempt_at = utcnow() + backoff(settings.retry_base_seconds, row.attempts)
