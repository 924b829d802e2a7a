"""Retention (issue #10): raw mail and attachments of old mail in a final status are removed,
by ``mailbot purge`` and by a loop inside ``serve``; conversations, comments and text stay."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import undefer

from mailbot.bots.default import app
from mailbot.config import Settings
from mailbot.serve import Node, running
from mailbot.store import attachments, blobs, conversations, retention
from mailbot.store.attachments import StoredAttachment
from mailbot.store.models import Comment, InboundAttachment, InboundMessage, InboundStatus, utcnow
from mailbot.testing import make_thread, settings_for
from mailbot.web import views
from tests.test_cli import _env, _mailbot

DAYS_AGO_40 = time.time() - 40 * 86400
SHARED = b"the same logo, in an old mail and in a new one"


@dataclass
class Mail:
    """The ids of the scenario's messages, and the blob keys each names."""

    old_big: int  # delivered 40 days ago: raw in a blob, two attachments, a comment
    old_small: int  # delivered 40 days ago: raw in its row
    old_quarantined: int
    young: int  # delivered 5 days ago, one attachment shared with old_big
    in_flight: dict[InboundStatus, int]  # 40 days old, never final
    raw_key: str
    only_key: str  # an attachment only old_big names
    shared_key: str  # an attachment old_big and young both name


async def _message(
    node: Node,
    status: InboundStatus,
    days: int,
    raw: bytes,
    files: Sequence[bytes] = (),
    *,
    comment: str | None = None,
) -> tuple[int, str | None, list[str]]:
    store = blobs.for_settings(node.settings)
    raw_key = await blobs.put_if_large(store, raw, node.settings.blob_threshold)
    keys = [await store.put(data) for data in files]
    async with node.sessions() as session, session.begin():
        convo = await conversations.get(session, "issue-1")
        assert convo is not None
        row = InboundMessage(
            status=status,
            received_at=utcnow() - timedelta(days=days),
            raw=b"" if raw_key else raw,
            raw_blob=raw_key,
            raw_sha256="",
            size=len(raw),
            parsed={"subject": "Re: Issue issue-1", "text": "the reply, whole"},
            reply_text="the reply",
            conversation_id=convo.id,
        )
        session.add(row)
        await session.flush()
        stored = [
            StoredAttachment(n, f"file{n}.bin", "application/pdf", len(data), key, key)
            for n, (data, key) in enumerate(zip(files, keys, strict=True))
        ]
        await attachments.record(session, row.id, stored)
        if comment is not None:
            session.add(Comment(conversation_id=convo.id, inbound_id=row.id, body=comment))
    return row.id, raw_key, keys


async def _scenario(node: Node) -> Mail:
    await make_thread(node, "issue-1", ("ann", "bob"))
    big = b"X" * (node.settings.blob_threshold + 1)
    delivered, final = InboundStatus.delivered, InboundStatus.quarantined
    old_big, raw_key, (only_key, shared_key) = await _message(
        node, delivered, 40, big, [b"only here", SHARED], comment="Looks good to me."
    )
    assert raw_key is not None
    old_small, _, _ = await _message(node, delivered, 40, b"small raw mail")
    old_quarantined, _, _ = await _message(node, final, 40, b"spam, reviewed")
    young, _, _ = await _message(node, delivered, 5, big + b"!", [SHARED])
    in_flight = {}
    for status in (InboundStatus.pending, InboundStatus.processing, InboundStatus.unscanned):
        in_flight[status], _, _ = await _message(node, status, 40, big + status.encode(), [b"x"])
    for path in blobs.for_settings(node.settings).root.rglob("*"):
        if path.is_file():
            os.utime(path, (DAYS_AGO_40, DAYS_AGO_40))  # written when the mail came
    return Mail(
        old_big, old_small, old_quarantined, young, in_flight, raw_key, only_key, shared_key
    )


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    # The database test_cli's `mailbot` subprocesses use; blobs beside it, in tmp_path.
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    return settings_for(tmp_path, database_url=url, blob_threshold=1024, **overrides)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with running(_settings(tmp_path), app, smtp=False, work=False, http=False) as started:
        yield started


async def _row(node: Node, inbound_id: int) -> InboundMessage:
    async with node.sessions() as session:
        row = await session.get(InboundMessage, inbound_id, options=[undefer(InboundMessage.raw)])
    assert row is not None
    return row


async def test_retention_removes_raw_mail_and_attachments_and_keeps_what_people_wrote(
    node: Node,
) -> None:
    mail = await _scenario(node)
    store = blobs.for_settings(node.settings)
    report = await retention.purge(node.sessions, store, timedelta(days=30))
    assert (report.messages, report.attachments, report.blobs) == (3, 2, 3)
    assert report.blobs_removed == 2  # the shared one is still named by the young message
    assert report.raw_bytes == node.settings.blob_threshold + 1 + len(b"small raw mail") + len(
        b"spam, reviewed"
    )
    for inbound_id in (mail.old_big, mail.old_small, mail.old_quarantined):
        row = await _row(node, inbound_id)
        assert row.raw == b"" and row.raw_blob is None and row.purged_at is not None
        assert row.reply_text == "the reply" and row.parsed is not None  # the text stays
    assert not store.path(mail.raw_key).exists() and not store.path(mail.only_key).exists()
    assert store.path(mail.shared_key).exists()
    async with node.sessions() as session:
        kept = await session.scalars(select(Comment.body).where(Comment.inbound_id == mail.old_big))
        assert list(kept) == ["Looks good to me."]
        shown = await views.conversation(session, "issue-1")
        assert shown is not None and [c["body"] for c in shown["comments"]] == ["Looks good to me."]
        one = await views.inbound_one(session, mail.old_big)
        assert one is not None and one["raw"]["removed"] == "raw removed by retention"
        assert one["reply_text"] == "the reply"
        listed = [(a["filename"], a.get("removed")) for a in one["attachments"]]
        assert listed == [
            ("file0.bin", "removed by retention"),
            ("file1.bin", "removed by retention"),
        ]
    # A second run finds nothing more to do.
    again = await retention.purge(node.sessions, store, timedelta(days=30))
    assert (again.messages, again.blobs) == (0, 0)


async def test_retention_never_touches_mail_in_flight_or_younger_than_the_limit(
    node: Node,
) -> None:
    mail = await _scenario(node)
    store = blobs.for_settings(node.settings)
    await retention.purge(node.sessions, store, timedelta(days=30))
    for inbound_id in [mail.young, *mail.in_flight.values()]:
        row = await _row(node, inbound_id)
        assert row.purged_at is None and row.raw_blob is not None
        assert await store.get(row.raw_blob)  # still whole
        async with node.sessions() as session:
            files = await attachments.listed(session, inbound_id)
        assert files and all(f.blob_key and store.path(f.blob_key).exists() for f in files)


async def test_a_dry_run_counts_and_changes_nothing(node: Node) -> None:
    mail = await _scenario(node)
    store = blobs.for_settings(node.settings)
    before = sorted(p for p in store.root.rglob("*") if p.is_file())
    report = await retention.purge(node.sessions, store, timedelta(days=30), dry_run=True)
    assert (report.messages, report.attachments, report.blobs, report.blobs_removed) == (3, 2, 3, 0)
    assert sorted(p for p in store.root.rglob("*") if p.is_file()) == before
    assert (await _row(node, mail.old_big)).purged_at is None


async def test_mailbot_purge_on_the_command_line(tmp_path: Path, node: Node) -> None:
    mail = await _scenario(node)
    env = _env(tmp_path, MAILBOT_HOME=str(tmp_path))
    dry = json.loads(await _mailbot(env, "purge", "--older-than", "30", "--dry-run", "--json"))
    assert (dry["dry_run"], dry["messages"], dry["blobs_removed"]) == (True, 3, 0)
    assert (await _row(node, mail.old_big)).purged_at is None
    out = await _mailbot(env, "purge")  # retention_days, 30 by default
    assert "removed the raw mail of 3 message(s) older than 30 day(s)" in out
    assert "2 blob(s) deleted, 1 kept" in out
    assert (await _row(node, mail.old_big)).purged_at is not None
    await _mailbot(env, "purge", "--older-than", "-1", ok=False)


async def test_the_loop_inside_serve_purges_and_collects_orphans(tmp_path: Path) -> None:
    settings = _settings(tmp_path, retention_every_seconds=0.05)
    async with running(settings, app, smtp=False, work=False, http=False) as node:
        mail = await _scenario(node)
        store = blobs.for_settings(settings)
        orphan = await store.put(b"put, then the process died before its row committed")
        os.utime(store.path(orphan), (DAYS_AGO_40, DAYS_AGO_40))
        loop = asyncio.create_task(retention.retention_loop(node.sessions, settings))
        try:
            async with asyncio.timeout(20):
                while (
                    store.path(orphan).exists()
                    or (await _row(node, mail.old_big)).purged_at is None
                ):
                    await asyncio.sleep(0.05)
        finally:
            loop.cancel()
            with pytest.raises(asyncio.CancelledError):
                await loop
        assert (await _row(node, mail.young)).purged_at is None


async def test_with_retention_off_the_loop_only_collects_orphans(tmp_path: Path) -> None:
    settings = _settings(tmp_path, retention_days=0)
    async with running(settings, app, smtp=False, work=False, http=False) as node:
        mail = await _scenario(node)
        report = await retention.run_once(node.sessions, blobs.for_settings(settings), settings)
        assert report.messages == 0 and report.orphans_removed == 0
        assert (await _row(node, mail.old_big)).purged_at is None


@pytest.mark.postgres
async def test_retention_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    settings = settings_for(
        tmp_path, database_url=postgres_url, blob_threshold=1024, migrate_on_start=True
    )
    async with running(settings, app, smtp=False, work=False, http=False) as node:
        mail = await _scenario(node)
        store = blobs.for_settings(settings)
        report = await retention.purge(node.sessions, store, timedelta(days=30))
        assert (report.messages, report.blobs_removed) == (3, 2)
        assert (await _row(node, mail.old_big)).purged_at is not None
        assert (await _row(node, mail.young)).purged_at is None
        orphan = await store.put(b"never named")
        os.utime(store.path(orphan), (DAYS_AGO_40, DAYS_AGO_40))
        assert await retention.collect_garbage(node.sessions, store) == 1
        assert store.path(mail.shared_key).exists()
        async with node.sessions() as session:
            left = await session.scalars(
                select(InboundAttachment.blob_key).where(InboundAttachment.inbound_id == mail.young)
            )
            assert list(left) == [mail.shared_key]
