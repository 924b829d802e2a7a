"""Rate limits on the SMTP listener: per client IP and per envelope sender.

::

    connect ──▶ too many connections in all           421 4.3.2, connection closed
                too many open from this IP            421 4.7.0, connection closed
                too many opened this minute, this IP  421 4.7.0, connection closed
    MAIL    ──▶ too many messages this minute, IP     451 4.7.1 (the sender retries later)
                too many messages this minute, sender 451 4.7.1

Each per-minute limit is a token bucket: ``n`` per minute allows a burst of ``n`` and then one
every ``60/n`` seconds. A limit of 0 is off. Clients in ``rate_limit_exempt`` (loopback by
default, as Postfix's anvil exempts ``$mynetworks``) are held to no limit but the total, and
authenticated submitters are not held to the message limits: they are known by name, and
can reach no more than anyone (mailbot is never a relay).

The state is in memory, per node: behind several MX records each node counts on its own, so
the effective limit is up to ``nodes × limit``. Refused attempts do not use up the budget.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

from mailbot.config import Settings
from mailbot.errors import ConfigError
from mailbot.receive import Reply

SERVER_BUSY = Reply(421, "4.3.2", "Too many connections, try again later")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections from {ip}, try again later")
CONNECTING_TOO_FAST = Reply(421, "4.7.0", "Too many connections from {ip} this minute, slow down")
IP_SENDING_TOO_FAST = Reply(451, "4.7.1", "Too many messages from {ip} this minute, slow down")
SENDER_TOO_FAST = Reply(451, "4.7.1", "Too many messages from {sender} this minute, slow down")

PRUNE_AT = 10_000  # keys kept before idle ones are dropped, so a scan cannot fill memory

Clock = Callable[[], float]


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


class Limits:
    """Every SMTP rate limit of one node, from its settings."""

    def __init__(self, settings: Settings, clock: Clock = time.monotonic) -> None:
        try:
            self.exempt = [
                ipaddress.ip_network(n, strict=False) for n in settings.rate_limit_exempt
            ]
        except ValueError as exc:
            raise ConfigError(f"rate_limit_exempt: {exc}") from exc
        self.max_connections = settings.max_connections
        self.max_per_ip = settings.max_connections_per_ip
        self.connection_rate = TokenBuckets(settings.connections_per_minute_per_ip, clock)
        self.ip_messages = TokenBuckets(settings.messages_per_minute_per_ip, clock)
        self.sender_messages = TokenBuckets(settings.messages_per_minute_per_sender, clock)
        self.open_total = 0
        self.open_by_ip: dict[str, int] = {}

    def is_exempt(self, ip: str | None) -> bool:
        if ip is None:  # not an IP socket (a test transport): nothing to count by
            return True
        try:
            address = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return True
        return any(address in network for network in self.exempt)

    def connect(self, ip: str | None) -> str | None:
        """The 421 reply for a connection over a limit, or None: then it is counted, and
        :meth:`disconnect` must be called when it ends."""
        if self.max_connections and self.open_total >= self.max_connections:
            return str(SERVER_BUSY)
        if ip is not None and not self.is_exempt(ip):
            if self.max_per_ip and self.open_by_ip.get(ip, 0) >= self.max_per_ip:
                return TOO_MANY_CONNECTIONS.format(ip=ip)
            if not self.connection_rate.ready(ip):
                return CONNECTING_TOO_FAST.format(ip=ip)
            self.connection_rate.take(ip)
            self.open_by_ip[ip] = self.open_by_ip.get(ip, 0) + 1
        self.open_total += 1
        return None

    def disconnect(self, ip: str | None) -> None:
        self.open_total -= 1
        if ip is not None and not self.is_exempt(ip):
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
