"""Mail from one sender to one address reaches its bot in the order it arrived.

The worker reads several messages at once (phase 1: parse, strip, DKIM), and a short one is
read sooner than a long one. Without turns, "First!" followed a moment later by "/reset"
would reach the bot as "/reset" then "First!". Each message takes a turn when it is claimed
(claims come in arrival order) for every (sender, recipient) it carries, and enters its
phase 2 only once the earlier holders of those turns are done with theirs, or are in line
for it (mailbot/pipeline/batches.py works in the order it was handed work). Mail that shares
no pair with another is never held up. Within one process; across PostgreSQL nodes a
conversation is still consistent (its row is locked, mailbot/pipeline/dispatch.py), and
mostly in order, as each node claims the oldest rows first. A message that fails and is
retried later (backoff), or one taken back after its lease ran out, lines up again behind
what is in flight then: the order holds for mail that goes through on its first try.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class Turn:
    """One message's place in line: ``await turn.wait()`` before phase 2, ``turn.done()``
    once it is in line for phase 2, or however it ends (done twice is fine)."""

    def __init__(self, line: Turns, keys: list[str], before: list[asyncio.Future[None]]) -> None:
        self._line = line
        self._keys = keys
        self._before = before
        self._own: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def wait(self) -> None:
        for earlier in self._before:
            await asyncio.shield(earlier)  # a cancelled wait leaves the earlier turn alone

    def done(self) -> None:
        if not self._own.done():
            self._own.set_result(None)
            self._line.release(self._keys, self._own)


class Turns:
    """The line for each (sender, recipient) pair with a message in flight."""

    def __init__(self) -> None:
        self._last: dict[str, asyncio.Future[None]] = {}

    def take(self, mail_from: str, rcpt_tos: Iterable[str]) -> Turn:
        sender = mail_from.lower()
        # Tokens survive case-folding: REPLY+ABC@ and reply+abc@ are one address.
        keys = sorted({f"{sender}\0{rcpt.lower()}" for rcpt in rcpt_tos})
        before = [self._last[key] for key in keys if key in self._last]
        turn = Turn(self, keys, list(dict.fromkeys(before)))
        for key in keys:
            self._last[key] = turn._own
        return turn

    def release(self, keys: list[str], own: asyncio.Future[None]) -> None:
        for key in keys:
            if self._last.get(key) is own:  # nobody queued behind it: forget the pair
                del self._last[key]

    def __len__(self) -> int:
        return len(self._last)
