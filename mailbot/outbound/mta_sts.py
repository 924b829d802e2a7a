"""MTA-STS (RFC 8461): a domain that says its mail must arrive over verified TLS gets it so.

A domain opts in with a TXT record at ``_mta-sts.<domain>`` (``v=STSv1; id=...``) and a
policy file at ``https://mta-sts.<domain>/.well-known/mta-sts.txt``: its ``mode``
(``enforce``, ``testing`` or ``none``), the MX host patterns it allows and how long to
remember it (``max_age``). In ``enforce`` mode mailbot delivers only to the hosts named, over
STARTTLS with a certificate valid for the host's name; otherwise the mail waits (deferred),
never sent in clear. A policy is remembered for its ``max_age`` and fetched again when the TXT
record's ``id`` changes; when the TXT record or the fetch fails, a remembered policy still
holds (RFC 8461 5.1), which is what stops a downgrade by an attacker who blocks the fetch.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from mailbot.trust.resolver import DnsTempError

if TYPE_CHECKING:
    from mailbot.trust.resolver import Resolver

log = logging.getLogger(__name__)

MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 3.2: senders may refuse larger policies
MAX_AGE_CAP = 31_557_600  # one year, RFC 8461 3.2
FETCH_TIMEOUT = 10.0
REFRESH_SECONDS = 86_400.0  # a remembered policy is fetched again after a day (or half its life)
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")


@dataclass(frozen=True)
class Policy:
    mode: str  # "enforce", "testing" or "none"
    mx: tuple[str, ...]  # host patterns: "mx.example.org" or "*.example.org"
    max_age: int
    id: str = ""

    def allows(self, host: str) -> bool:
        """Whether ``host`` is one the policy names (a ``*.`` covers exactly one label)."""
        host = host.rstrip(".").lower()
        for pattern in self.mx:
            if pattern.startswith("*."):
                first, _, rest = host.partition(".")
                if first and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


def parse(text: str) -> Policy:
    """The policy in a policy file; :class:`ValueError` if it is not a valid one."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise ValueError("not an STSv1 policy")
    mode = (fields.get("mode") or [""])[0]
    if mode not in ("enforce", "testing", "none"):
        raise ValueError(f"unknown mode {mode!r}")
    try:
        max_age = min(int((fields.get("max_age") or [""])[0]), MAX_AGE_CAP)
    except ValueError as exc:
        raise ValueError("max_age is not a number") from exc
    mx = tuple(p.rstrip(".").lower() for p in fields.get("mx", []) if p)
    if mode != "none" and not mx:
        raise ValueError("no mx patterns")
    return Policy(mode=mode, mx=mx, max_age=max_age)


def record_id(txt_records: list[str]) -> str | None:
    """The ``id`` of the one ``v=STSv1`` record, or None (none, several, or malformed)."""
    found = [t for t in txt_records if t.replace(" ", "").startswith("v=STSv1;")]
    if len(found) != 1:
        return None
    for part in found[0].split(";"):
        key, _, value = part.strip().partition("=")
        if key == "id" and _ID.match(value):
            return value
    return None


class Policies:
    """The MTA-STS policies of recipient domains, fetched once and remembered."""

    def __init__(
        self,
        resolver: Resolver,
        client: Callable[[], httpx.AsyncClient] | None = None,
    ) -> None:
        self.resolver = resolver
        self._client = client or (lambda: httpx.AsyncClient(timeout=FETCH_TIMEOUT))
        # domain → (expires, policy, when to fetch it again); in memory: a restart fetches anew
        self._known: dict[str, tuple[float, Policy, float]] = {}

    async def for_domain(self, domain: str) -> Policy | None:
        """The policy to apply to mail for ``domain`` now, or None."""
        now = time.monotonic()
        known = self._known.get(domain)
        if known is not None and known[0] <= now:
            del self._known[domain]
            known = None
        try:
            txt = await asyncio.to_thread(self.resolver.lookup, f"_mta-sts.{domain}", "TXT")
            current = record_id(txt)
        except DnsTempError:
            current = None  # DNS trouble: what we remember holds
        if current is None:
            return known[1] if known else None
        if known is not None and known[1].id == current and now < known[2]:
            return known[1]
        # A new id, or the same one due for a refresh well before it expires (RFC 8461 10.2):
        # a policy refreshed while it is valid never lapses to "no policy" because one fetch,
        # at the moment it expires, was blocked.
        try:
            policy = await self._fetch(domain)
        except (httpx.HTTPError, ValueError, UnicodeDecodeError) as exc:
            log.warning("MTA-STS policy of %s could not be fetched: %s", domain, exc)
            return known[1] if known else None
        policy = Policy(policy.mode, policy.mx, policy.max_age, current)
        if len(self._known) > 10_000:
            self._known.clear()
        refresh = now + min(policy.max_age / 2, REFRESH_SECONDS)
        self._known[domain] = (now + policy.max_age, policy, refresh)
        return policy

    async def _fetch(self, domain: str) -> Policy:
        url = f"https://mta-sts.{domain}/.well-known/mta-sts.txt"
        async with self._client() as client, client.stream("GET", url) as response:
            # RFC 8461 3.3: no redirects, 200 only, text/plain.
            if response.status_code != 200:
                raise ValueError(f"{url} answered {response.status_code}")
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "text/plain":
                raise ValueError(f"{url} is {kind or 'untyped'}, not text/plain")
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_POLICY_BYTES:
                    raise ValueError(f"{url} is larger than {MAX_POLICY_BYTES} bytes")
        return parse(body.decode("utf-8"))
