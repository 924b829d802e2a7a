"""The CPU-heavy part of the pipeline (MIME parsing, talon), run in other processes.

The SMTP server and the rest of the pipeline share one event loop; a 20 MB message or a
pathological HTML body must not delay the next ``250``. :class:`Analyser` sends the raw bytes
to a small process pool and gets plain data back. With ``cpu_workers=0`` it uses a thread
instead (for tools and tests that want no child processes); the work is the same function.

A message that makes a worker process die or hang is answered with :class:`TransientError`
(the spool retries it, then marks it failed); the pool is rebuilt, and the next message is
not affected.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from mailbot.errors import TransientError
from mailbot.parse import ParsedMail, parse
from mailbot.strip import Stripped, load_signature_model, strip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Analysis:
    parsed: ParsedMail
    reply: str
    reply_with_signature: str
    signature: str | None
    quote: str | None


def analyse(raw: bytes) -> dict[str, Any]:
    """Parse and strip one message. Runs in a worker process: takes and returns plain data."""
    parsed = parse(raw)
    try:
        stripped = strip(parsed.text, parsed.html, parsed.sender)
    except Exception as exc:  # noqa: BLE001 - a stripping bug must not lose the reply
        log.exception("stripping failed; keeping the whole text")
        whole = (parsed.text or "").strip()
        stripped = Stripped(whole, whole, None, None)
        parsed.defects.append(f"StripError: {type(exc).__name__}")
    return {
        "parsed": parsed.to_json(),
        "reply": stripped.reply,
        "reply_with_signature": stripped.reply_with_signature,
        "signature": stripped.signature,
        "quote": stripped.quote,
    }


def _from_plain(data: dict[str, Any]) -> Analysis:
    return Analysis(
        parsed=ParsedMail.from_json(data["parsed"]),
        reply=data["reply"],
        reply_with_signature=data["reply_with_signature"],
        signature=data["signature"],
        quote=data["quote"],
    )


def _warm_up() -> None:
    load_signature_model()


class Analyser:
    """A lifespan resource: ``async with Analyser(n) as analyse: await analyse(raw)``."""

    def __init__(self, workers: int, timeout: float = 120.0) -> None:
        self.workers = workers
        self.timeout = timeout
        self._pool: ProcessPoolExecutor | None = None

    async def __aenter__(self) -> Analyser:
        if self.workers > 0:
            self._pool = self._new_pool()
            # Start the processes and train talon's model now, not on the first message.
            loop = asyncio.get_running_loop()
            await asyncio.gather(
                *(loop.run_in_executor(self._pool, _warm_up) for _ in range(self.workers))
            )
        else:
            await asyncio.to_thread(_warm_up)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: forking a process that runs an event loop and threads is unsafe.
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))

    async def __call__(self, raw: bytes) -> Analysis:
        if self._pool is None:
            return _from_plain(await asyncio.to_thread(analyse, raw))
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                return _from_plain(await loop.run_in_executor(self._pool, analyse, raw))
        except (BrokenProcessPool, TimeoutError) as exc:
            self._rebuild()
            what = "timed out" if isinstance(exc, TimeoutError) else "crashed its worker"
            raise TransientError(f"analysing the message {what}") from exc

    def _rebuild(self) -> None:
        old, self._pool = self._pool, self._new_pool()
        if old is not None:
            # A hung worker never returns; shutdown() alone would wait for it forever.
            for process in list(getattr(old, "_processes", {}).values()):
                process.terminate()
            old.shutdown(wait=False, cancel_futures=True)
