"""The blob store (issue #10): content-addressed files, durable before a row names them, read
back as streams; blobs no row names are collected after a grace period."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import time
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import dkim
import pytest
from sqlalchemy.orm import undefer

from mailbot.bots.default import app
from mailbot.pipeline.analyse import Analyser
from mailbot.serve import running
from mailbot.store import blobs, retention, spool
from mailbot.store.blobs import DirectoryStore
from mailbot.store.db import Sessions, database, upgrade
from mailbot.store.models import InboundAttachment, InboundMessage, InboundStatus
from mailbot.testing import SmtpSink, make_thread, settings_for, smtp_send, wait_for_status
from mailbot.trust import authenticate
from mailbot.trust.resolver import ZoneResolver
from tests.test_layout import _loaded_by
from tests.trust_support import dkim_sign, zone

MiB = 1024 * 1024
HOUR_AGO = time.time() - 2 * 3600


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[Sessions]:
    async with database(f"sqlite+aiosqlite:///{tmp_path / 'blobs.db'}") as (engine, made):
        await upgrade(engine)
        yield made


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != ".lock")


def big_mail(sender: str, to: str, attachment: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, "Re: the report"
    msg["Message-ID"] = make_msgid(domain="client.example")
    msg.set_content("Here is the whole report.")
    msg.add_attachment(attachment, maintype="application", subtype="pdf", filename="report.pdf")
    return msg.as_bytes(policy=SMTP)  # CRLF, as it travels: the stored bytes are these


async def _in_chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_a_25_mib_blob_round_trips_byte_for_byte_as_bytes_and_as_a_stream(
    tmp_path: Path,
) -> None:
    store = DirectoryStore(tmp_path / "blobs")
    data = os.urandom(25 * MiB)
    key = await store.put(data)
    assert key == hashlib.sha256(data).hexdigest()
    assert store.path(key) == tmp_path / "blobs" / key[:2] / key[2:4] / key
    assert await store.get(key) == data
    chunks = [chunk async for chunk in await store.reader(key)]
    assert len(chunks) > 1 and b"".join(chunks) == data

    other = DirectoryStore(tmp_path / "streamed")
    assert await other.put_stream(_in_chunks(data, MiB)) == key
    assert other.path(key).read_bytes() == data
    with io.BytesIO(data) as file:
        assert await DirectoryStore(tmp_path / "from-file").put_stream(file) == key


async def test_put_returns_once_the_file_is_fsynced_renamed_and_its_folder_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store = DirectoryStore(tmp_path / "blobs")
    for put in (store.put, lambda data: store.put_stream(_in_chunks(data, 1000))):
        events.clear()
        data = os.urandom(5000)
        key = await put(data)
        # The bytes reach the disk, then get their name, then the name reaches the disk.
        assert events.count("rename") == 1 and events[-2:] == ["rename", "fsync dir"], events
        assert events.index("fsync file") < events.index("rename"), events
        with open(store.path(key), "rb") as file:
            assert file.read() == data
        assert stat.S_IMODE(store.path(key).stat().st_mode) == 0o600  # people's mail
    assert [p.name for p in _files(store.root) if p.name.startswith(".")] == []


async def test_the_same_bytes_put_twice_are_one_file_written_once_and_refreshed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DirectoryStore(tmp_path / "blobs")
    data = b"the same attachment, sent twice\n" * 1000
    key = await store.put(data)
    path = store.path(key)
    os.utime(path, (HOUR_AGO, HOUR_AGO))
    inode = path.stat().st_ino
    renames: list[Any] = []
    monkeypatch.setattr(os, "replace", lambda *args: renames.append(args))
    assert await store.put(data) == key
    assert await store.put_stream(_in_chunks(data, 4096)) == key
    assert renames == [] and path.stat().st_ino == inode
    # Reused: younger now, so a collector that has not deleted it yet leaves it alone.
    assert path.stat().st_mtime > time.time() - 60
    assert len(_files(store.root)) == 1


async def test_a_damaged_blob_is_written_again_by_the_next_put(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "blobs")
    data = os.urandom(10_000)
    key = await store.put(data)
    store.path(key).write_bytes(data[:100])  # a disk that lied about fsync
    assert await store.put(data) == key
    assert await store.get(key) == data


@pytest.mark.parametrize(
    "key",
    ["../../../etc/passwd", "A" * 64, "a" * 63, "a" * 65, "", "a" * 62 + "/x", "g" * 64],
)
async def test_anything_but_a_sha256_hex_key_is_refused(tmp_path: Path, key: str) -> None:
    store = DirectoryStore(tmp_path / "blobs")
    with pytest.raises(ValueError, match="not a blob key"):
        await store.get(key)
    with pytest.raises(ValueError, match="not a blob key"):
        await store.reader(key)


async def test_a_missing_blob_fails_when_opened_not_in_the_middle_of_a_stream(
    tmp_path: Path,
) -> None:
    store = DirectoryStore(tmp_path / "blobs")
    with pytest.raises(FileNotFoundError):
        await store.reader("0" * 64)


async def test_raw_mail_goes_to_the_store_from_the_threshold_on(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "blobs")
    assert await blobs.put_if_large(store, b"x" * 99, threshold=100) is None
    key = await blobs.put_if_large(store, b"x" * 100, threshold=100)
    assert key is not None and await store.get(key) == b"x" * 100
    assert await blobs.put_if_large(None, b"x" * 1000, threshold=100) is None


async def test_the_store_is_in_the_data_directory_unless_blob_dir_says_otherwise(
    tmp_path: Path,
) -> None:
    assert blobs.root_for(settings_for(tmp_path)) == tmp_path / "blobs"
    elsewhere = settings_for(tmp_path, blob_dir=tmp_path / "elsewhere")
    assert blobs.for_settings(elsewhere).root == tmp_path / "elsewhere"


def _age(path: Path) -> None:
    os.utime(path, (HOUR_AGO, HOUR_AGO))


async def test_a_blob_whose_row_never_committed_is_collected_after_the_grace_period(
    tmp_path: Path, sessions: Sessions
) -> None:
    store = DirectoryStore(tmp_path / "blobs")
    raw_key = await store.put(b"a big raw message")
    file_key = await store.put(b"an attachment")
    lost_key = await store.put(b"put, fsynced, and then the process died")
    fresh_key = await store.put(b"put a moment ago; its row is about to commit")
    async with sessions() as session, session.begin():
        row = InboundMessage(
            status=InboundStatus.delivered,
            raw=b"",
            raw_blob=raw_key,
            raw_sha256=raw_key,
        )
        session.add(row)
        await session.flush()
        session.add(
            InboundAttachment(
                inbound_id=row.id,
                position=0,
                content_type="application/pdf",
                size=13,
                sha256=file_key,
                blob_key=file_key,
            )
        )
    async with sessions() as session:  # the row that would have named it: never committed
        async with session.begin():
            session.add(
                InboundMessage(
                    status=InboundStatus.pending, raw=b"", raw_blob=lost_key, raw_sha256=""
                )
            )
            await session.flush()
            await session.rollback()
    for key in (raw_key, file_key, lost_key):
        _age(store.path(key))
    # Writes that never finished: a temporary file beside the blobs, and a stream's.
    beside = store.path(raw_key).parent / ".abandoned.tmp"
    beside.write_bytes(b"half")
    (store.root / "incoming").mkdir()
    streamed = store.root / "incoming" / ".abandoned.tmp"
    streamed.write_bytes(b"half")
    _age(beside)
    _age(streamed)

    assert await retention.collect_garbage(sessions, store) == 1
    assert not store.path(lost_key).exists() and not beside.exists() and not streamed.exists()
    for key in (raw_key, file_key, fresh_key):
        assert store.path(key).exists(), key
    # Once past the grace period, the young orphan goes too; what rows name never does.
    assert await retention.collect_garbage(sessions, store, timedelta(0)) == 1
    assert {p.name for p in _files(store.root)} == {raw_key, file_key}


async def test_the_blob_modules_load_no_database_library(tmp_path: Path) -> None:
    # The analyser processes import these: they must stay small (no SQLAlchemy, no TLS).
    for module in ("mailbot.store.blobs", "mailbot.store.attachments", "mailbot.pipeline.analyse"):
        loaded = _loaded_by(f"import {module}")
        assert module in loaded
        heavy = sorted(n for n in loaded if n.split(".")[0] in {"sqlalchemy", "cryptography"})
        assert heavy == [], module


async def test_a_25_mib_mail_over_smtp_is_kept_in_the_blob_store_and_read_back_whole(
    tmp_path: Path, sink: SmtpSink
) -> None:
    settings = settings_for(tmp_path, sink, blob_threshold=256 * 1024)
    async with running(settings, app) as node:
        thread = await make_thread(node, "big-1", ("ann",))
        raw = big_mail("ann@example.com", thread.addresses["ann"], os.urandom(17 * MiB + MiB // 2))
        assert 23 * MiB < len(raw) < settings.max_message_size
        sent = await smtp_send(node.smtp_port, "ann@example.com", [thread.addresses["ann"]], raw)
        assert sent.data_code == 250, sent.data_message
        await wait_for_status(node.sessions, sent.inbound_id)
        async with node.sessions() as session:
            row = await session.get(
                InboundMessage, sent.inbound_id, options=[undefer(InboundMessage.raw)]
            )
        assert row is not None and row.raw_blob is not None and row.raw == b""
        assert blobs.for_settings(settings).path(row.raw_blob).read_bytes() == raw
        store = blobs.for_settings(settings)
        loaded, _envelope = await spool.load(node.sessions, sent.inbound_id, store)
        assert loaded == raw


@pytest.mark.parametrize("tampered", [False, True])
async def test_big_mail_is_read_by_the_analyser_and_the_sender_check_from_its_file(
    tmp_path: Path, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch, tampered: bool
) -> None:
    """Over the threshold the main process hands on the blob's path, never the bytes; the
    DKIM signature over the whole body is still checked, and a changed body still fails."""
    handed: list[type] = []
    analyse = Analyser.__call__

    async def spy(self: Analyser, raw: bytes | Path, sent: Sequence[bytes] = ()) -> Any:
        handed.append(type(raw))
        return await analyse(self, raw, sent)

    monkeypatch.setattr(Analyser, "__call__", spy)
    settings = settings_for(tmp_path, sink, blob_threshold=256 * 1024, dns_zone=zone())
    async with running(settings, app) as node:
        thread = await make_thread(node, "big-signed", ("ann",))
        to = thread.addresses["ann"]
        raw = dkim_sign(big_mail("ann@example.com", to, os.urandom(2 * MiB)))
        if tampered:
            raw = raw[:-300] + bytes(reversed(raw[-300:-2])) + b"\r\n"
        sent = await smtp_send(node.smtp_port, "ann@example.com", [to], raw)
        assert sent.data_code == 250, sent.data_message
        row = await wait_for_status(node.sessions, sent.inbound_id)
    assert handed and all(issubclass(kind, Path) for kind in handed)
    (signature,) = (row.authentication or {})["dkim"]
    assert signature["result"] == ("fail" if tampered else "pass"), signature


def test_unsigned_mail_is_never_split_into_copies_by_dkimpy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[bytes] = []
    dkimpy = dkim.DKIM

    def read(raw: bytes, **kwargs: Any) -> Any:
        asked.append(raw)
        return dkimpy(raw, **kwargs)

    raw = big_mail("ann@example.com", "x@example.org", b"%PDF" * 1000)
    monkeypatch.setattr(dkim, "DKIM", read)
    assert authenticate.check_dkim(raw, ZoneResolver()) == []
    assert asked == []
    # The field name in any case is still a signature for dkimpy to read.
    authenticate.check_dkim(b"dKiM-SiGnAtUrE: v=1\r\n" + raw, ZoneResolver())
    assert len(asked) == 1
