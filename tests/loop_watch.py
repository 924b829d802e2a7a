"""How long the event loop was held by one callback: what "the SMTP loop froze" means.

A NOOP's round trip on a busy two-core machine also measures every other process there (a
browser test beside this one, a model trained in a fresh analyser). One callback's run time
does not: it is the time this loop could serve nobody else. asyncio's debug mode measures the
same thing, but also changes what it measures (slower tasks, extra warnings).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Held:
    longest: float = 0.0  # seconds, the longest single callback
    culprit: str = ""  # that callback, for the assertion message


@contextmanager
def watch_loop() -> Iterator[Held]:
    """Times every callback every event loop in this process runs, while inside."""
    held = Held()
    run = asyncio.events.Handle._run

    def timed(handle: asyncio.Handle) -> None:
        started = time.perf_counter()
        try:
            run(handle)
        finally:
            took = time.perf_counter() - started
            if took > held.longest:
                held.longest, held.culprit = took, _name(handle)

    asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]
    try:
        yield held
    finally:
        asyncio.events.Handle._run = run  # type: ignore[method-assign]


def _name(handle: asyncio.events.Handle) -> str:
    # A task's step shows as an anonymous wrapper: name the task's coroutine instead.
    owner = getattr(getattr(handle, "_callback", None), "__self__", None)
    if isinstance(owner, asyncio.Task):
        return repr(owner.get_coro())[:300]
    return repr(handle)[:300]
