"""The SpamAssassin client: one message in, a :class:`Verdict` out, through ``spamd``.

:class:`SpamChecker` speaks the spamd protocol with aiospamc's client and request types, over
a connection that is always closed (see :class:`_ClosingConnection`). Every call has a
timeout (the library's default is ten minutes), at most ``concurrency`` calls are in flight
(spamd forks a child per connection; a burst of mail must not fork-bomb it), and every way
spamd can be unreachable (refused, silent, an error reply) becomes one exception,
:class:`~mailbot.errors.SpamdUnavailable`, so callers decide once what "down" means.

A verdict is read from spamd's ``REPORT``: the ``Spam:`` header gives the score and spamd's
own threshold; the report's table gives each rule that fired, with its score and
description::

     pts rule name              description
    ---- ---------------------- --------------------------------------------------
    1000 GTUBE                  BODY: Generic Test for Unsolicited Bulk Email
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import aiospamc
from aiospamc.client import Client
from aiospamc.connections import TcpConnectionManager
from aiospamc.exceptions import (
    AIOSpamcConnectionFailed,
    BadResponse,
    ClientException,
    ClientTimeoutException,
)
from aiospamc.header_values import MessageClassOption, MessageClassValue
from aiospamc.incremental_parser import parse_set_remove_value
from aiospamc.requests import Request
from aiospamc.responses import Response, ResponseException

from mailbot.config import Settings
from mailbot.errors import ConfigError, SpamdUnavailable
from mailbot.store.models import utcnow

# A rule line starts at the left margin (" 2.7", "-0.0", "1000"); a wrapped description
# continues on a line indented to the description column.
_RULE = re.compile(r"^\s{0,3}(-?\d+(?:\.\d+)?)\s+([A-Za-z0-9_]+)\s*(.*)$")
_DIVIDER = re.compile(r"^-{3,}\s+-{3,}")


@dataclass(frozen=True)
class Rule:
    name: str
    score: float
    description: str


@dataclass(frozen=True)
class Verdict:
    """What spamd said about one message."""

    score: float
    threshold: float  # spamd's own required score
    rules: list[Rule] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "scanned": True,
            "score": self.score,
            "threshold": self.threshold,
            "rules": [
                {"name": r.name, "score": r.score, "description": r.description} for r in self.rules
            ],
            "scanned_at": utcnow().isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verdict:
        return cls(
            score=float(data["score"]),
            threshold=float(data["threshold"]),
            rules=[Rule(r["name"], float(r["score"]), r["description"]) for r in data["rules"]],
        )


def parse_rules(report: str) -> list[Rule]:
    """The rules table of a spamd report (descriptions unwrapped); empty if there is none."""
    rules: list[Rule] = []
    in_table = False
    for line in report.splitlines():
        if not in_table:
            in_table = bool(_DIVIDER.match(line))
            continue
        if not line.strip():
            if rules:
                break  # the table ends at the first blank line after it began
            continue
        found = _RULE.match(line)
        if found:
            score, name, description = found.groups()
            rules.append(Rule(name, float(score), description.strip()))
        elif rules and line[:1].isspace():
            last = rules[-1]
            rules[-1] = Rule(last.name, last.score, f"{last.description} {line.strip()}".strip())
    return rules


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) → its parts; a clear error for anything else."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"MAILBOT_SPAMD must look like host:port, not {address!r}")
    return host.strip("[]"), int(port)


class SpamChecker:
    """A lifespan-free client (each call is one connection): check, learn, ping."""

    def __init__(self, address: str, timeout: float = 10.0, concurrency: int = 4) -> None:
        self.address = address
        self.host, self.port = split_host_port(address)
        self.timeout_seconds = timeout
        self._timeout = aiospamc.Timeout(
            total=timeout, connection=min(timeout, 5.0), response=timeout
        )
        self._slots = asyncio.Semaphore(max(1, concurrency))

    async def check(self, raw: bytes) -> Verdict:
        response = await self._call(Request("REPORT", body=raw))
        spam = response.headers.get("Spam")
        score, threshold = getattr(spam, "score", None), getattr(spam, "threshold", None)
        if score is None or threshold is None:
            raise SpamdUnavailable(f"spamd at {self.address} answered without a Spam header")
        body = bytes(response.body or b"").decode("utf-8", "replace")
        return Verdict(float(score), float(threshold), parse_rules(body))

    async def learn(self, raw: bytes, kind: Literal["spam", "ham"]) -> bool:
        """Teach spamd's Bayes filter (TELL; spamd needs ``--allow-tell``).

        True if spamd learned from it; False if it had already learned this message as that.
        """
        headers: dict[str, Any] = {
            "Message-class": MessageClassValue(MessageClassOption(kind)),
            "Set": parse_set_remove_value("local"),
        }
        response = await self._call(Request("TELL", headers=headers, body=raw))
        did_set = response.headers.get("DidSet")
        action = getattr(did_set, "action", None)
        return bool(getattr(action, "local", False))

    async def ping(self) -> bool:
        try:
            await self._call(Request("PING"))
        except SpamdUnavailable:
            return False
        return True

    async def _call(self, request: Request) -> Response:
        verb = request.verb
        client = Client(_ClosingConnection(self.host, self.port, timeout=self._timeout))
        async with self._slots:
            try:
                # The outer timeout also bounds what aiospamc's own timeouts miss (writing).
                async with asyncio.timeout(self.timeout_seconds + 1.0):
                    return await client.request(request)
            except (AIOSpamcConnectionFailed, ClientTimeoutException, TimeoutError) as exc:
                raise SpamdUnavailable(
                    f"spamd at {self.address} did not answer {verb}: {_describe(exc)}"
                ) from exc
            except (ClientException, BadResponse, ResponseException, OSError) as exc:
                raise SpamdUnavailable(
                    f"spamd at {self.address} failed {verb}: {_describe(exc)}"
                ) from exc


class _ClosingConnection(TcpConnectionManager):
    """aiospamc's TCP connection, closed on every path.

    aiospamc 1.2.0 leaves the socket to the garbage collector when a call times out or
    fails mid-way (a ResourceWarning, and a file descriptor held until collection).
    """

    async def _send(self, data: bytes) -> bytes:
        reader, writer = await self._connect()
        try:
            writer.write(data)
            if writer.can_write_eof():
                writer.write_eof()
            await writer.drain()
            return cast(bytes, await self._receive(reader))
        finally:
            writer.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, ClientTimeoutException)):
        return "timed out"
    text = str(exc) or (str(exc.__cause__) if exc.__cause__ else "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def checker_for(settings: Settings) -> SpamChecker | None:
    """The node's spamd client, or None when scanning is off (``MAILBOT_SPAMD`` unset)."""
    if not settings.spamd:
        return None
    return SpamChecker(settings.spamd, settings.spamd_timeout, settings.spamd_concurrency)
