"""Retention: raw mail and attachments are removed once they are old; what people wrote stays.

Like Action Mailbox's incineration, a message in a final status (delivered, rejected,
bounced, quarantined, failed: :data:`~mailbot.status.FINAL_INBOUND`) received more than
``retention_days`` ago (30) loses its raw bytes (the row's ``raw`` and its blob) and its
attachments' bytes; the row is marked ``purged_at``, so views say "removed by retention".
Its conversation, comments, parsed JSON, stripped text, attachment names and sizes stay. A
message still in flight, or waiting for spamd, is never touched. Mail to the inspector's
temporary addresses (bots with a ``subdomain``) is only there to be looked at: after
``inspector_retention_hours`` (24) all of it goes, the parsed JSON included.

:func:`purge` is ``mailbot purge`` and, every ``retention_every_seconds``, the loop
:func:`retention_loop` inside ``serve``; both also :func:`collect_garbage`: blobs no row
names (a write whose row never committed) once they are older than :data:`GRACE`.

The rows are changed and committed first, the blobs deleted after: a crash in between leaves
garbage for the next collection, never a row naming a missing blob. A blob another row still
names (the same bytes received twice) stays.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from sqlalchemy import delete, select, update

from mailbot.config import Settings
from mailbot.status import FINAL_INBOUND
from mailbot.store import blobs
from mailbot.store.blobs import BlobStore
from mailbot.store.db import Sessions
from mailbot.store.models import InboundAttachment, InboundMessage, utcnow

log = logging.getLogger(__name__)

# A blob younger than this may belong to a row not committed yet (a put refreshes the time of
# a blob it reuses): longer than any put-to-commit, which is a DATA transaction or one
# analysis (capped at analyse_timeout), and short enough that garbage does not pile up.
GRACE = timedelta(hours=1)
BATCH = 200  # messages per transaction


@dataclass
class Purged:
    """What a purge removed (or, in a dry run, would remove)."""

    dry_run: bool = False
    messages: int = 0
    raw_bytes: int = 0  # of raw mail, in rows and in blobs
    attachments: int = 0
    blobs: int = 0  # distinct blobs these messages no longer name
    blobs_removed: int = 0  # of those, deleted (the others: named elsewhere, or just reused)
    orphans_removed: int = 0  # blobs no row named (collect_garbage)

    def to_json(self) -> dict[str, int | bool]:
        return dict(self.__dict__)


async def named(sessions: Sessions, keys: list[str]) -> set[str]:
    """Which of ``keys`` some row names, as a raw message or as an attachment."""
    if not keys:
        return set()
    async with sessions() as session:
        raws = await session.scalars(
            select(InboundMessage.raw_blob).where(InboundMessage.raw_blob.in_(keys))
        )
        files = await session.scalars(
            select(InboundAttachment.blob_key).where(InboundAttachment.blob_key.in_(keys))
        )
        return {key for key in [*raws, *files] if key is not None}


async def purge(
    sessions: Sessions,
    store: BlobStore,
    older_than: timedelta,
    *,
    dry_run: bool = False,
    bots: Sequence[str] | None = None,
) -> Purged:
    """Remove the raw bytes and attachments' bytes of final messages received before
    ``older_than`` ago; with ``dry_run``, only count them. With ``bots``: only the mail those
    bots got, and all of it (the inspector's temporary addresses): the parsed JSON, texts,
    checks and outcome go too, and the attachments' rows."""
    cutoff = utcnow() - older_than
    report = Purged(dry_run=dry_run)
    after = 0
    while True:
        async with sessions() as session, session.begin():
            query = (
                select(InboundMessage.id, InboundMessage.size, InboundMessage.raw_blob)
                .where(
                    InboundMessage.purged_at.is_(None),
                    InboundMessage.received_at < cutoff,
                    InboundMessage.status.in_(FINAL_INBOUND),
                    InboundMessage.id > after,
                )
                .order_by(InboundMessage.id)
                .limit(BATCH)
            )
            if bots is not None:
                query = query.where(InboundMessage.bot.in_(list(bots)))
            if not dry_run:
                # Locked until the commit: a reprocess cannot make one in flight meanwhile.
                query = query.with_for_update(skip_locked=True)
            rows = (await session.execute(query)).all()
            if not rows:
                break
            ids = [row.id for row in rows]
            after = ids[-1]
            files = (
                await session.execute(
                    select(InboundAttachment.id, InboundAttachment.blob_key).where(
                        InboundAttachment.inbound_id.in_(ids),
                        InboundAttachment.blob_key.is_not(None),
                    )
                )
            ).all()
            keys = {row.raw_blob for row in rows if row.raw_blob} | {f.blob_key for f in files}
            report.messages += len(rows)
            report.raw_bytes += sum(row.size for row in rows)
            report.attachments += len(files)
            report.blobs += len(keys)
            if not dry_run:
                await session.execute(
                    update(InboundMessage)
                    .where(InboundMessage.id.in_(ids))
                    .values(raw=b"", raw_blob=None, purged_at=utcnow(), **_everything(bots))
                )
                attachments = InboundAttachment.inbound_id.in_(ids)
                if bots is None:
                    await session.execute(
                        update(InboundAttachment).where(attachments).values(blob_key=None)
                    )
                else:
                    await session.execute(delete(InboundAttachment).where(attachments))
        if not dry_run and keys:
            still = await named(sessions, sorted(keys))
            gone = await store.delete_stale(sorted(keys - still), GRACE)
            report.blobs_removed += len(gone)
    return report


def _everything(bots: Sequence[str] | None) -> dict[str, Any]:
    """What else goes when a bot's mail is removed whole: whatever the mail said."""
    if bots is None:
        return {}
    gone: dict[str, Any] = dict.fromkeys(("parsed", "reply_text", "signature", "quote"))
    return {
        **gone,
        "outcome": {"removed": "temporary address retention"},
        "spam": None,
        "authentication": None,
    }


async def collect_garbage(
    sessions: Sessions, store: BlobStore, older_than: timedelta = GRACE
) -> int:
    """Delete the blobs no row names, once older than ``older_than``; how many went."""
    return await blobs.collect(store, partial(named, sessions), older_than)


async def run_once(
    sessions: Sessions, store: BlobStore, settings: Settings, temporary: Sequence[str] = ()
) -> Purged:
    """One round of the loop: the mail of the ``temporary`` bots (those with temporary
    addresses: the inspector) by ``inspector_retention_hours``, everything by
    ``retention_days`` (0: none), then collect garbage."""
    report = Purged()
    if temporary and settings.inspector_retention_hours > 0:
        hours = timedelta(hours=settings.inspector_retention_hours)
        report = await purge(sessions, store, hours, bots=temporary)
    if settings.retention_days > 0:
        more = await purge(sessions, store, timedelta(days=settings.retention_days))
        for name, value in more.to_json().items():
            if name != "dry_run":
                setattr(report, name, getattr(report, name) + value)
    report.orphans_removed = await collect_garbage(sessions, store)
    if report.messages or report.orphans_removed:
        log.info(
            "retention: raw mail of %s message(s) removed (%s bytes, %s attachment(s), "
            "%s blob(s) deleted); %s orphaned blob(s) collected",
            report.messages,
            report.raw_bytes,
            report.attachments,
            report.blobs_removed,
            report.orphans_removed,
        )
    return report


async def retention_loop(
    sessions: Sessions, settings: Settings, temporary: Sequence[str] = ()
) -> None:
    """Inside ``serve``: a round now, then one every ``retention_every_seconds``."""
    store = blobs.for_settings(settings)
    while True:
        try:
            await run_once(sessions, store, settings, temporary)
        except Exception:  # noqa: BLE001 - database or disk away: nothing is lost, try later
            log.exception(
                "retention failed; trying again in %s s", settings.retention_every_seconds
            )
        await asyncio.sleep(settings.retention_every_seconds)
