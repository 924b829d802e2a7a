"""The blob store: big raw messages and attachments, as files named by their content.

A blob's key is the SHA-256 of its bytes in hex; :class:`DirectoryStore` keeps it at
``<root>/ab/cd/<key>``. The same bytes stored twice are stored once (the second put writes
nothing), so one key may be named by several rows.

Durable before named: ``put`` writes a temporary file, fsyncs it, renames it to its key and
fsyncs the directory, and only then returns; only then may the caller commit the row that
names the key. A crash in between leaves a blob that no row names: :func:`collect` removes it
once it is older than a grace period (a younger one may belong to a row about to commit, so
reusing a blob refreshes its time, under a lock that deleting takes too).

Disk work runs in threads (``asyncio.to_thread``), never on the event loop; the analyser
processes, which have no loop, call :meth:`DirectoryStore.put_sync`. Reading gives bytes or a
stream of chunks; writing takes bytes, an async iterator of chunks or a binary file, and holds
one chunk at a time.

:class:`BlobStore` is the contract; the directory is one backend of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from mailbot.config import Settings

CHUNK = 256 * 1024
KEY = re.compile(r"[0-9a-f]{64}")
TEMP_SUFFIX = ".tmp"  # temporary files start with "." too: never a key
INCOMING = "incoming"  # where a stream is written while its key is not known yet

Source = AsyncIterable[bytes] | BinaryIO


class BlobStore(Protocol):
    """Content-addressed bytes. Keys are lower-case SHA-256 hex; anything else is refused."""

    async def put(self, data: bytes) -> str:
        """Store ``data`` durably and return its key (no rewrite if it is already there)."""
        ...

    async def put_stream(self, source: Source) -> str:
        """Like :meth:`put`, from chunks: an async iterator of bytes, or a binary file."""
        ...

    async def get(self, key: str) -> bytes:
        """The bytes; :class:`FileNotFoundError` when there is no such blob."""
        ...

    async def reader(self, key: str, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        """The bytes as chunks; the blob is opened before this returns (a missing one raises
        :class:`FileNotFoundError` here, not in the middle of a response)."""
        ...

    def stale(self, older_than: timedelta) -> AsyncIterator[list[str]]:
        """Keys of blobs unchanged for ``older_than``, a batch at a time; abandoned temporary
        files as old are removed on the way."""
        ...

    async def delete_stale(self, keys: list[str], older_than: timedelta) -> list[str]:
        """Delete those of ``keys`` still unchanged for ``older_than``; the keys deleted."""
        ...


def check_key(key: str) -> str:
    if not KEY.fullmatch(key):
        raise ValueError(f"not a blob key: {key[:80]!r}")
    return key


class DirectoryStore:
    """Blobs as files under ``root`` (mode 0600, folders 0700: it is people's mail)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        check_key(key)
        return self.root / key[:2] / key[2:4] / key

    # --- writing ----------------------------------------------------------------------------

    def put_sync(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        if self._reuse(key, len(data)):
            return key
        target = self.path(key)
        _make_dirs(target.parent)
        fd, temp = tempfile.mkstemp(prefix=".", suffix=TEMP_SUFFIX, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            _install(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        return key

    async def put(self, data: bytes) -> str:
        return await asyncio.to_thread(self.put_sync, data)

    async def put_stream(self, source: Source) -> str:
        incoming = self.root / INCOMING
        await asyncio.to_thread(_make_dirs, incoming)
        fd, temp = await asyncio.to_thread(
            tempfile.mkstemp, prefix=".", suffix=TEMP_SUFFIX, dir=incoming
        )
        file = os.fdopen(fd, "wb")
        digest = hashlib.sha256()
        size = 0
        try:
            async for chunk in _chunks(source):
                size += len(chunk)
                await asyncio.to_thread(_write, file, digest.update, chunk)
            key = digest.hexdigest()
            await asyncio.to_thread(self._finish, file, temp, key, size)
        except BaseException:
            file.close()
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        return key

    def _finish(self, file: BinaryIO, temp: str, key: str, size: int) -> None:
        file.flush()
        os.fsync(file.fileno())
        file.close()
        if self._reuse(key, size):
            os.unlink(temp)
            return
        target = self.path(key)
        _make_dirs(target.parent)
        _install(temp, target)

    def _reuse(self, key: str, size: int) -> bool:
        """True when the blob is already there whole; its time is refreshed, so a collector
        that has not deleted it yet leaves it alone now (the lock orders the two)."""
        path = self.path(key)
        if not self.root.is_dir():
            return False
        with self._locked(exclusive=False):
            try:
                if os.stat(path).st_size != size:
                    return False  # damaged (a disk that lied about fsync): write it again
                os.utime(path)
            except FileNotFoundError:
                return False
        return True

    @contextlib.contextmanager
    def _locked(self, *, exclusive: bool) -> Iterator[None]:
        # flock: shared by the node and its analyser processes, per open file description.
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    # --- reading ----------------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self.path(key).read_bytes)

    async def reader(self, key: str, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        file = await asyncio.to_thread(open, self.path(key), "rb")
        return _read_chunks(file, chunk_size)

    # --- collecting -------------------------------------------------------------------------

    async def stale(self, older_than: timedelta) -> AsyncIterator[list[str]]:
        cutoff = time.time() - older_than.total_seconds()
        await asyncio.to_thread(_remove_old_temps, self.root / INCOMING, cutoff)
        firsts = await asyncio.to_thread(_subfolders, self.root)
        for first in firsts:  # one of 256 folders at a time: memory stays small
            keys = await asyncio.to_thread(_old_blobs, first, cutoff)
            if keys:
                yield keys

    async def delete_stale(self, keys: list[str], older_than: timedelta) -> list[str]:
        return await asyncio.to_thread(self._delete_stale, keys, older_than)

    def _delete_stale(self, keys: list[str], older_than: timedelta) -> list[str]:
        if not keys or not self.root.is_dir():
            return []
        deleted: list[str] = []
        with self._locked(exclusive=True):
            cutoff = time.time() - older_than.total_seconds()
            for key in keys:
                path = self.path(key)
                try:
                    if os.stat(path).st_mtime <= cutoff:
                        os.unlink(path)
                        deleted.append(key)
                except FileNotFoundError:
                    continue
        return deleted


Named = Callable[[list[str]], Awaitable[set[str]]]
BATCH = 500


async def collect(store: BlobStore, named: Named, older_than: timedelta) -> int:
    """Delete the blobs no row names that are older than ``older_than``; how many went.

    ``named(keys)`` answers which of ``keys`` some row names (mailbot/store/retention.py asks
    the database). A row that commits after it asked names a blob whose put came before that
    commit: refreshed then, it is younger than ``older_than`` and stays.
    """
    removed = 0
    async for keys in store.stale(older_than):
        for start in range(0, len(keys), BATCH):
            batch = keys[start : start + BATCH]
            keep = await named(batch)
            removed += len(
                await store.delete_stale([k for k in batch if k not in keep], older_than)
            )
    return removed


async def put_if_large(store: BlobStore | None, raw: bytes, threshold: int) -> str | None:
    """The key of ``raw`` in the store when it is ``threshold`` bytes or more (then the row
    keeps no copy), else None (the row keeps it). Returns once the blob is durable."""
    if store is None or len(raw) < threshold:
        return None
    return await store.put(raw)


def root_for(settings: Settings) -> Path:
    """``blob_dir``, else ``blobs`` in the node's data directory."""
    if settings.blob_dir is not None:
        return settings.blob_dir

    return settings.home_dir / "blobs"


def for_settings(settings: Settings) -> DirectoryStore:
    return DirectoryStore(root_for(settings))


# --- the file work, each piece run in a thread ------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(directory: Path) -> None:
    """Make ``directory`` and its missing parents, each made one durable in its parent."""
    missing: list[Path] = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        _fsync_dir(folder.parent)


def _install(temp: str, target: Path) -> None:
    os.replace(temp, target)  # atomic: the key names a whole file or nothing
    _fsync_dir(target.parent)


def _write(file: BinaryIO, hash_more: Callable[[bytes], None], chunk: bytes) -> None:
    hash_more(chunk)
    file.write(chunk)


async def _chunks(source: Source) -> AsyncIterator[bytes]:
    if isinstance(source, AsyncIterable):
        async for chunk in source:
            if chunk:
                yield bytes(chunk)
        return
    while chunk := await asyncio.to_thread(source.read, CHUNK):
        yield chunk


async def _read_chunks(file: BinaryIO, chunk_size: int) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(file.read, chunk_size):
            yield chunk
    finally:
        file.close()


def _subfolders(root: Path) -> list[Path]:
    try:
        with os.scandir(root) as entries:
            return sorted(Path(e.path) for e in entries if len(e.name) == 2 and e.is_dir())
    except FileNotFoundError:
        return []


def _old_blobs(first: Path, cutoff: float) -> list[str]:
    keys: list[str] = []
    for second in _subfolders(first):
        with os.scandir(second) as entries:
            for entry in entries:
                try:
                    old = entry.stat().st_mtime <= cutoff
                except FileNotFoundError:
                    continue
                if entry.name.startswith("."):
                    if old:  # a write that never finished
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                elif old and KEY.fullmatch(entry.name):
                    keys.append(entry.name)
    return keys


def _remove_old_temps(folder: Path, cutoff: float) -> None:
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                if entry.name.startswith(".") and entry.stat().st_mtime <= cutoff:
                    os.unlink(entry.path)
