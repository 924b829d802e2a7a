"""When to try again: the wait after a failed try, and the wait between passes of a loop.

The inbound spool and the outbox back off alike; the worker and the outbox sender both
sleep until they are woken by new work or their poll interval passes.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

# Doublings before the wait stops growing: 2**10 times the base (about half an hour at
# 2 s), and never an overflow however many attempts a setting allows.
MAX_DOUBLINGS = 10


def backoff(base_seconds: float, attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed try: base, twice, four times... capped."""
    return timedelta(seconds=base_seconds * 2 ** min(max(attempts - 1, 0), MAX_DOUBLINGS))


async def wait_for_work(wake: asyncio.Event, seconds: float) -> None:
    """Return when ``wake`` is set or after ``seconds``, whichever comes first."""
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
    # that arrives as the event is set, and the node then never stops.
    try:
        async with asyncio.timeout(seconds):
            await wake.wait()
    except TimeoutError:
        pass
