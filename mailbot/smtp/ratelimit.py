"""Rate limits on the SMTP listener: per client IP and per envelope sender.

::

    connect ──▶ too many connections in all           421 4.3.2, connection closed
                too many open from this IP            421 4.7.0, connection closed
                too many opened this minute, this IP  421 4.7.0, connection closed
    MAIL    ──▶ too many messages this minute, IP     451 4.7.1 (the sender retries later)
                too many messages this minute, sender 451 4.7.1
    RCPT    ──▶ unknown reply address, past the free  the refusal waits (a slower guesser)
                ones this minute from this IP

Each per-minute limit is a token bucket: ``n`` per minute allows a burst of ``n`` and then one
every ``60/n`` seconds. A limit of 0 is off. Clients in ``rate_limit_exempt`` (loopback by
default, as Postfix's anvil exempts ``$mynetworks``) are not held to the per-minute limits,
and authenticated submitters are not held to the message limits: they are known by name, and
can reach no more than anyone (mailbot is never a relay).

The open connections per IP and the slowdown for unknown recipients hold for every client,
loopback included (behind a local proxy or port-forward everyone is loopback), except the
networks in ``connection_limit_exempt`` (none by default). When the node is busy (open
connections at ``smtp_stress_at`` of ``max_connections``) idle sessions get the short
``smtp_stress_idle_timeout``, as Postfix's stress mode does; the listener applies it.

The state is in memory, per node: behind several MX records each node counts on its own, so
the effective limit is up to ``nodes × limit``. Refused attempts do not use up the budget.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailbot.config import Settings
from mailbot.errors import ConfigError
from mailbot.smtp.replies import (
    CONNECTING_TOO_FAST,
    IP_SENDING_TOO_FAST,
    SENDER_TOO_FAST,
    SERVER_BUSY,
    TOO_MANY_CONNECTIONS,
)

PRUNE_AT = 10_000  # keys kept before idle ones are dropped, so a scan cannot fill memory
REFUSAL_WINDOW = 60.0  # seconds during which a refused recipient counts against its IP

Clock = Callable[[], float]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One token bucket per key, ``per_minute`` tokens deep, refilled at ``per_minute``/60 s."""

    def __init__(self, per_minute: int, clock: Clock = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def ready(self, key: str) -> bool:
        """Whether ``key`` has a token now (without taking it); always True when off."""
        return self.capacity <= 0 or self._refilled(key).tokens >= 1.0

    def take(self, key: str) -> None:
        if self.capacity > 0:
            self._refilled(key).tokens -= 1.0

    def _refilled(self, key: str) -> _Bucket:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= PRUNE_AT:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        return bucket

    def _prune(self, now: float) -> None:
        # A bucket that would be full again holds no information: forget it.
        self._buckets = {
            key: bucket
            for key, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.updated) * self.rate < self.capacity
        }

    def __len__(self) -> int:
        return len(self._buckets)


class RefusalWindow:
    """Refused recipients per client in the last :data:`REFUSAL_WINDOW` seconds, and how long
    the next refusal should wait: nothing for the first ``free``, then ``delay`` more for each
    one after, up to ``max_delay``.

    Memory is bounded: each client keeps only as many times as it takes to reach
    ``max_delay``, and at most :data:`PRUNE_AT` clients are kept, the ones refused longest ago
    dropped first. IPv6 clients count by /64, the block one subscriber gets.
    """

    def __init__(
        self, free: int, delay: float, max_delay: float, clock: Clock = time.monotonic
    ) -> None:
        self.free = max(free, 0)
        self.delay = delay
        self.max_delay = max(max_delay, 0.0)
        self.clock = clock
        steps = math.ceil(self.max_delay / delay) if delay > 0 else 0
        self._keep = self.free + steps + 1
        self._seen: dict[str, deque[float]] = {}  # oldest refusal first: dict order is LRU

    def refused(self, ip: str) -> float:
        """Count one refusal for ``ip`` now; the seconds to wait before answering it."""
        if self.delay <= 0 or self.max_delay <= 0:
            return 0.0
        now = self.clock()
        key = _client_key(ip)
        times = self._seen.pop(key, None) or deque(maxlen=self._keep)
        while times and times[0] <= now - REFUSAL_WINDOW:
            times.popleft()
        times.append(now)
        self._seen[key] = times  # re-inserted: the most recently refused is last
        self._forget_old(now)
        past = len(times) - self.free
        return min(self.max_delay, past * self.delay) if past > 0 else 0.0

    def _forget_old(self, now: float) -> None:
        while self._seen:
            oldest_key = next(iter(self._seen))
            if len(self._seen) <= PRUNE_AT and self._seen[oldest_key][-1] > now - REFUSAL_WINDOW:
                return
            del self._seen[oldest_key]

    def __len__(self) -> int:
        return len(self._seen)


def _client_key(ip: str) -> str:
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _networks(name: str, values: Sequence[str]) -> list[Network]:
    try:
        return [ipaddress.ip_network(n, strict=False) for n in values]
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from exc


def _in_any(ip: str, networks: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return True  # not an IP socket address: nothing to count by
    return any(address in network for network in networks)


class Limits:
    """Every SMTP rate limit of one node, from its settings."""

    def __init__(self, settings: Settings, clock: Clock = time.monotonic) -> None:
        self.exempt = _networks("rate_limit_exempt", settings.rate_limit_exempt)
        self.connection_exempt = _networks(
            "connection_limit_exempt", settings.connection_limit_exempt
        )
        self.max_connections = settings.max_connections
        self.max_per_ip = settings.max_connections_per_ip
        self.idle_timeout = settings.smtp_idle_timeout
        self.stress_idle_timeout = min(settings.smtp_stress_idle_timeout, self.idle_timeout)
        self.stress_at = settings.smtp_stress_at
        self.hard_error_limit = settings.smtp_hard_error_limit
        self.bad_recipients = RefusalWindow(
            settings.bad_recipients_free,
            settings.bad_recipient_delay,
            settings.bad_recipient_max_delay,
            clock,
        )
        self.connection_rate = TokenBuckets(settings.connections_per_minute_per_ip, clock)
        self.ip_messages = TokenBuckets(settings.messages_per_minute_per_ip, clock)
        self.sender_messages = TokenBuckets(settings.messages_per_minute_per_sender, clock)
        self.open_total = 0
        self.open_by_ip: dict[str, int] = {}

    def is_exempt(self, ip: str | None) -> bool:
        """Whether ``ip`` is exempt from the per-minute limits (``rate_limit_exempt``)."""
        # None: not an IP socket (a test transport): nothing to count by.
        return ip is None or _in_any(ip, self.exempt)

    def is_connection_exempt(self, ip: str | None) -> bool:
        """Whether ``ip`` is exempt from the per-IP caps (``connection_limit_exempt``)."""
        return ip is None or _in_any(ip, self.connection_exempt)

    @property
    def stressed(self) -> bool:
        """Whether the node is busy enough for short idle timeouts (Postfix's stress mode)."""
        return (
            self.max_connections > 0
            and self.stress_at > 0
            and self.open_total >= self.stress_at * self.max_connections
        )

    def current_idle_timeout(self) -> float:
        return self.stress_idle_timeout if self.stressed else self.idle_timeout

    def connect(self, ip: str | None) -> str | None:
        """The 421 reply for a connection over a limit, or None: then it is counted, and
        :meth:`disconnect` must be called when it ends."""
        if self.max_connections and self.open_total >= self.max_connections:
            return str(SERVER_BUSY)
        per_ip = not self.is_connection_exempt(ip)
        if per_ip and self.max_per_ip and self.open_by_ip.get(str(ip), 0) >= self.max_per_ip:
            return TOO_MANY_CONNECTIONS.format(ip=ip)
        if not self.is_exempt(ip):
            assert ip is not None  # is_exempt(None) is True
            if not self.connection_rate.ready(ip):
                return CONNECTING_TOO_FAST.format(ip=ip)
            self.connection_rate.take(ip)
        if per_ip:
            self.open_by_ip[str(ip)] = self.open_by_ip.get(str(ip), 0) + 1
        self.open_total += 1
        return None

    def disconnect(self, ip: str | None) -> None:
        self.open_total -= 1
        if ip is not None and not self.is_connection_exempt(ip):
            left = self.open_by_ip.get(ip, 1) - 1
            if left > 0:
                self.open_by_ip[ip] = left
            else:
                self.open_by_ip.pop(ip, None)

    def message(self, ip: str | None, sender: str, *, authenticated: bool) -> str | None:
        """The 451 reply for a MAIL over a limit, or None (and the message is counted)."""
        if authenticated or self.is_exempt(ip):
            return None
        assert ip is not None  # is_exempt(None) is True
        # The null sender (bounces) comes from everywhere: count it per client, not as one.
        key = sender.lower() if sender not in ("", "<>") else f"<>@{ip}"
        if not self.ip_messages.ready(ip):
            return IP_SENDING_TOO_FAST.format(ip=ip)
        if not self.sender_messages.ready(key):
            return SENDER_TOO_FAST.format(sender=sender or "<>")
        self.ip_messages.take(ip)
        self.sender_messages.take(key)
        return None

    def recipient_refused(self, ip: str | None, *, authenticated: bool) -> float:
        """Count an unknown recipient refused to ``ip``; the seconds to wait before saying so.

        Guessing reply addresses costs time; a person who mistyped one address does not wait.
        """
        if authenticated or self.is_connection_exempt(ip):
            return 0.0
        assert ip is not None  # is_connection_exempt(None) is True
        return self.bad_recipients.refused(ip)
