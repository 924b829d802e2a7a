"""Reply addresses found live at RCPT lately: the next RCPT to one needs no query.

Replies to a busy conversation come to the same few addresses, and each RCPT asked the
database, a round trip that waited behind everything else the node had for it. Measured
(benchmarks/throughput.py, SQLite, this project's 2-core machine), remembering live answers
took durable acceptance from 0.25 to 0.45 × a bare aiosmtpd server.

Only live answers are kept, each for ``rcpt_cache_seconds`` and never past its token's
expiry, at most :data:`SIZE` of them (the oldest go first): a stranger's guesses cost it
nothing. A token revoked in this process (the API, the page) is forgotten at once, and not
taken back for those seconds (a lookup that read it just before the revocation committed
would remember it live again). One
revoked in another process (the CLI, another node) may still be taken at RCPT for those
seconds; the worker then refuses that mail (``rejected``, "reply address is revoked"), as it
does for a token revoked while its mail was queued.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from collections.abc import Callable

SIZE = 10_000

_every: weakref.WeakSet[RecentlyLive] = weakref.WeakSet()  # one a listening SMTP server


class RecentlyLive:
    """``recent.live(token_hash, domain)``; ``recent.remember(token_hash, domain, left)``
    (``left``: seconds until the token expires)."""

    def __init__(
        self, seconds: float, size: int = SIZE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self._until: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._revoked: OrderedDict[str, float] = OrderedDict()  # hash → kept out until
        self._size = size
        self._clock = clock
        _every.add(self)

    def live(self, token_hash: str, domain: str) -> bool:
        until = self._until.get((token_hash, domain))
        if until is None:
            return False
        if until <= self._clock():
            del self._until[(token_hash, domain)]
            return False
        return True

    def remember(self, token_hash: str, domain: str, left: float) -> None:
        seconds = min(self.seconds, left)
        if seconds <= 0 or self._revoked.get(token_hash, 0.0) > self._clock():
            return
        key = (token_hash, domain)
        self._until.pop(key, None)
        self._until[key] = self._clock() + seconds
        while len(self._until) > self._size:
            self._until.popitem(last=False)

    def forget(self, token_hash: str) -> None:
        for key in [k for k in self._until if k[0] == token_hash]:
            del self._until[key]
        now = self._clock()
        self._revoked.pop(token_hash, None)
        self._revoked[token_hash] = now + self.seconds
        while self._revoked and (
            len(self._revoked) > self._size or next(iter(self._revoked.values())) <= now
        ):
            self._revoked.popitem(last=False)

    def __len__(self) -> int:
        return len(self._until)


def forget(token_hash: str) -> None:
    """A token was revoked here: no server of this process takes it on memory any more."""
    for recent in list(_every):
        recent.forget(token_hash)
