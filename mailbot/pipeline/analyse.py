"""The CPU-heavy part of the pipeline (MIME parsing, talon), run in other processes.

The SMTP server and the rest of the pipeline share one event loop; a 20 MB message or a
pathological HTML body must not delay the next ``250``. :class:`Analyser` sends the raw bytes
to one of ``workers`` analyser processes and gets plain data back. With ``workers=0`` it uses
a thread instead (for tools and tests that want no child processes); the work is the same.

Each process is a *slot* of its own (a one-process pool), so a message that hangs or kills
its process costs only that slot, never the messages in the others:

- the message structure is screened first (:func:`mailbot.screen.screen_structure`): mail
  over a limit is refused before anything parses it;
- each process runs under a memory cap (``RLIMIT_AS``) and each message under a time cap; a
  message that hits either is refused as hostile (:class:`Rejection`, code ``too_costly``),
  once, never retried, and its process is replaced;
- a process that dies for another reason (killed, a crash in C code) answers
  :class:`TransientError`: the spool retries the message, then marks it failed;
- a process whose memory grew past ``recycle_rss_mb`` (big mail leaves the allocator's
  high-water mark behind) is replaced after the message, so memory returns to its baseline.

Attachments: with a ``blob_root`` the analyser writes each attachment's decoded bytes to the
blob store itself (mailbot/store/blobs.py), one at a time and fsynced, and hands back only
their keys (:class:`StoredAttachment`): the bytes never cross to the node's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import multiprocessing
import os
import resource
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from mailbot.errors import Rejection, TransientError
from mailbot.parse import ParsedMail, parse
from mailbot.screen import Limits, screen_structure
from mailbot.status import RefusalCode
from mailbot.store.attachments import StoredAttachment, put_attachments
from mailbot.store.blobs import DirectoryStore
from mailbot.strip.reply import Stripped, load_signature_model, strip

log = logging.getLogger(__name__)

TOO_COSTLY = RefusalCode.too_costly
SENT_TEXT_CHARS = 100_000  # of each sent mail cut against: its beginning is what is looked for


@dataclass(frozen=True)
class Analysis:
    parsed: ParsedMail
    # ``parsed`` as the analyser sent it (ParsedMail.to_json): stored as it is, not made
    # again from ``parsed`` (dataclasses.asdict costs more than the rest of the row).
    parsed_json: dict[str, Any] = field(repr=False, compare=False)
    reply: str
    signature: str | None
    quote: str | None
    attachments: tuple[StoredAttachment, ...] = ()
    cut: dict[str, str | None] | None = None  # which rule cut the quote and the signature


def analyse(
    raw: bytes | Path,
    limits: Limits | None = None,
    blob_root: str | None = None,
    sent: Sequence[bytes] = (),
) -> dict[str, Any]:
    """Screen, parse and strip one message, and put its attachments in the blob store at
    ``blob_root`` (None: not stored). ``sent``: mails we sent the person who wrote it, which
    the quote is cut against. Runs in a worker process: plain data in and out.
    ``raw`` may be the path of a file that holds the message (big mail, in the blob
    store): read here, it never has to be copied through the node's main process.

    A refusal comes back as ``{"refused": code, "reason": ...}``, never as an exception: the
    parent decides what a refusal means for the row."""
    if isinstance(raw, Path):
        raw = raw.read_bytes()
    refusal = screen_structure(raw, limits or Limits())
    if refusal is not None:
        return {"refused": refusal.code, "reason": refusal.reason}
    try:
        return _analyse(raw, limits, blob_root, sent)
    except MemoryError:
        return {"refused": TOO_COSTLY, "reason": "analysing it needed more memory than allowed"}
    finally:
        _note_memory()


def _analyse(
    raw: bytes, limits: Limits | None, blob_root: str | None, sent: Sequence[bytes]
) -> dict[str, Any]:
    parsed = parse(raw, limits)
    if "ParseError: MemoryError" in parsed.defects:
        raise MemoryError  # parse() never raises; over the cap is still over the cap
    try:
        stripped = strip(parsed.text, parsed.html, parsed.sender, sent_texts(sent))
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a stripping bug must not lose the reply
        log.exception("stripping failed; keeping the whole text")
        whole = (parsed.text or "").strip()
        stripped = Stripped(whole, whole, None, None)
        parsed.defects.append(f"StripError: {type(exc).__name__}")
    stored = []
    if blob_root is not None and parsed.attachments:
        stored = put_attachments(raw, limits or Limits(), parsed, DirectoryStore(blob_root))
    return {
        "parsed": parsed.to_json(),
        "reply": stripped.reply,
        "signature": stripped.signature,
        "quote": stripped.quote,
        "cut": {
            "quote": stripped.quote_rule,
            "signature": stripped.signature_rule,
            # Each rule that fired, where, and whether it made the cut (issue #14).
            "rules": [asdict(c) for c in stripped.cuts],
        },
        "attachments": [asdict(a) for a in stored],
        "rss_mb": _rss_mb(),
    }


def sent_texts(raws: Sequence[bytes]) -> list[str]:
    """The plain text of each mail we sent (composed by us: a text part, or text and HTML)."""
    texts = []
    for raw in raws:
        try:
            message = BytesParser(policy=policy.default).parsebytes(raw)
            body = message.get_body(("plain",))
            text = body.get_content() if body is not None else ""
        except Exception:  # noqa: BLE001 - an unreadable one is simply not cut against
            log.warning("a sent mail could not be read to cut a reply against", exc_info=True)
            continue
        if isinstance(text, str) and text.strip():
            texts.append(text[:SENT_TEXT_CHARS])
    return texts


def _from_plain(data: dict[str, Any]) -> Analysis:
    if "refused" in data:
        raise Rejection(
            f"message refused as too costly to read: {data['reason']}", code=data["refused"]
        )
    return Analysis(
        parsed=ParsedMail.from_json(data["parsed"]),
        parsed_json=data["parsed"],
        reply=data["reply"],
        signature=data["signature"],
        quote=data["quote"],
        attachments=tuple(StoredAttachment(**a) for a in data.get("attachments", [])),
        cut=data.get("cut"),
    )


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def _note_memory() -> None:
    # Give freed heap back to the operating system now (glibc keeps it otherwise).
    from mailbot.pipeline.memory import trim

    trim()


def _start_worker(memory_mb: int, parent: int) -> None:
    """Runs first in every analyser process: die with the node, the memory cap, then
    talon's model."""
    from mailbot.pipeline.memory import die_with_parent, return_big_blocks

    die_with_parent(parent)
    return_big_blocks()
    if memory_mb > 0:
        cap = memory_mb * 1024 * 1024
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    load_signature_model()


def _ready() -> int:
    return os.getpid()


class _Slot:
    """One analyser process."""

    def __init__(self, memory_mb: int) -> None:
        # spawn, not fork: forking a process that runs an event loop and threads is unsafe.
        self.pool = ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(memory_mb, os.getpid()),
        )
        self.pid: int | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.pid = await loop.run_in_executor(self.pool, _ready)

    def kill(self) -> None:
        # A hung worker never returns; shutdown() alone would wait for it forever.
        for process in list(getattr(self.pool, "_processes", {}).values()):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        self.pool.shutdown(wait=False, cancel_futures=True)


class Analyser:
    """A lifespan resource: ``async with Analyser(n) as analyse: await analyse(raw)``.

    ``blob_root``: the blob store's directory (mailbot/store/blobs.py ``root_for``), where
    attachments are put; None keeps none."""

    def __init__(
        self,
        workers: int,
        timeout: float = 30.0,
        *,
        memory_mb: int = 2048,
        limits: Limits | None = None,
        recycle_rss_mb: float = 600.0,
        blob_root: Path | None = None,
    ) -> None:
        self.workers = workers
        self.blob_root = None if blob_root is None else str(blob_root)
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.limits = limits or Limits()
        self.recycle_rss_mb = recycle_rss_mb
        self._free: asyncio.Queue[_Slot] = asyncio.Queue()
        self._slots: set[_Slot] = set()
        self._starting: set[asyncio.Task[None]] = set()
        self._crashed: dict[bytes, None] = {}  # digests of messages that killed a process
        self.replaced = 0  # slots replaced since start (hung, over a cap, crashed, recycled)

    async def __aenter__(self) -> Analyser:
        if self.workers > 0:
            # Start the processes and train talon's model now, not on the first message.
            await asyncio.gather(*(self._add_slot() for _ in range(self.workers)))
        else:
            await asyncio.to_thread(load_signature_model)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._starting):
            task.cancel()
        for task in list(self._starting):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for slot in list(self._slots):
            slot.kill()
        self._slots.clear()

    @property
    def pids(self) -> list[int]:
        """The process ids of the started analyser processes (for tests and tools)."""
        return [slot.pid for slot in self._slots if slot.pid is not None]

    async def _add_slot(self) -> None:
        slot = _Slot(self.memory_mb)
        self._slots.add(slot)
        try:
            await slot.start()
        except BaseException:
            self._slots.discard(slot)
            slot.kill()
            raise
        self._free.put_nowait(slot)

    def _replace(self, slot: _Slot) -> None:
        self.replaced += 1
        self._slots.discard(slot)
        slot.kill()
        task = asyncio.create_task(self._add_slot_retrying())
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _add_slot_retrying(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._add_slot()
                return
            except Exception:  # noqa: BLE001 - keep the node's capacity; say why
                log.exception("starting an analyser process failed; retrying in %.1f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def __call__(self, raw: bytes | Path, sent: Sequence[bytes] = ()) -> Analysis:
        if self.workers <= 0:
            work = asyncio.to_thread(analyse, raw, self.limits, self.blob_root, sent)
            return _from_plain(await work)
        slot = await self._free.get()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                data = await loop.run_in_executor(
                    slot.pool, analyse, raw, self.limits, self.blob_root, tuple(sent)
                )
        except TimeoutError:
            self._replace(slot)
            raise Rejection(
                f"message refused as too costly to read: analysing it took longer than "
                f"{self.timeout:g} s",
                code=TOO_COSTLY,
            ) from None
        except BrokenProcessPool as exc:
            self._replace(slot)
            # Killed from outside, or out of memory before our code ran (reading the bytes
            # in): retry once in a fresh process; the same bytes crashing it again are hostile.
            # A path names a blob by its content's SHA-256: as good a name as the bytes'.
            digest = hashlib.sha256(raw if isinstance(raw, bytes) else bytes(raw)).digest()
            if digest in self._crashed:
                raise Rejection(
                    "message refused as too costly to read: it crashed its analyser process twice",
                    code=TOO_COSTLY,
                ) from exc
            self._crashed[digest] = None
            while len(self._crashed) > 1000:
                self._crashed.pop(next(iter(self._crashed)))
            raise TransientError("analysing the message crashed its worker") from exc
        except BaseException:
            self._replace(slot)  # cancelled mid-message: the process may still be busy
            raise
        if data.get("refused") == TOO_COSTLY or data.get("rss_mb", 0.0) > self.recycle_rss_mb:
            self._replace(slot)  # over the memory cap, or grown: start afresh
        else:
            self._free.put_nowait(slot)
        return _from_plain(data)
