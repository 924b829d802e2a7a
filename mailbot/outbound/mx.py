"""Delivery straight to the recipient's domain (``MAILBOT_DELIVERY=mx``), as an MTA does.

The domain's MX records, by preference (equal ones in random order, RFC 5321 5.1); no MX
record: the domain's own address (the "implicit MX"), and with no address either, no mail can
reach it; a null MX (``0 .``, RFC 7505): a permanent failure; DNS trouble: try again later.
Each host is tried at each of its addresses. STARTTLS is used when offered; where the domain
publishes an MTA-STS policy in ``enforce`` mode (mailbot/outbound/mta_sts.py), only the
hosts it names are used, over verified TLS, or the mail waits.

DNS is the one resolver sender trust uses (mailbot/trust/resolver.py): the system's, or with
``MAILBOT_DNS=offline`` the records of ``dns_zone``, so a test can point a domain's MX at a
sink on loopback.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Sequence

from mailbot.config import Settings
from mailbot.errors import DeliveryError
from mailbot.outbound.connections import Connections, Peer
from mailbot.outbound.mta_sts import Policies, Policy
from mailbot.trust.resolver import DnsTempError, Resolver, resolver_for

log = logging.getLogger(__name__)

MAX_HOSTS = 5  # MX hosts tried per attempt, and addresses per host: bounded work per mail
CACHE_SECONDS = 300.0  # a destination's hosts are looked up again after this


async def lookup(resolver: Resolver, name: str, rdtype: str) -> list[str]:
    """One question, off the event loop (the resolver blocks); DNS trouble is temporary."""
    try:
        return await asyncio.to_thread(resolver.lookup, name, rdtype)
    except DnsTempError as exc:
        raise DeliveryError(f"DNS could not answer now: {exc}", permanent=False) from exc


async def exchanges(resolver: Resolver, domain: str) -> list[str]:
    """The hosts that take mail for ``domain``, best first; :class:`DeliveryError` if none."""
    records: list[tuple[int, str]] = []
    for text in await lookup(resolver, domain, "MX"):
        preference, _, host = text.partition(" ")
        host = host.strip().rstrip(".").lower()
        if not host:
            # RFC 7505: "0 ." says the domain takes no mail at all.
            raise DeliveryError(f"{domain} accepts no mail (null MX, RFC 7505)", permanent=True)
        records.append((int(preference) if preference.isdigit() else 65535, host))
    if records:
        records.sort(key=lambda r: (r[0], random.random()))  # noqa: S311 - spreading load
        return [host for _, host in records]
    # RFC 5321 5.1: no MX, the domain itself is the host, if it has an address.
    if await addresses(resolver, domain):
        return [domain]
    raise DeliveryError(f"{domain} has no MX record and no address", permanent=True)


async def addresses(resolver: Resolver, host: str) -> list[str]:
    return [*await lookup(resolver, host, "A"), *await lookup(resolver, host, "AAAA")]


class MxTransport:
    """Sends each mail to its recipient domain's MX hosts (``MAILBOT_DELIVERY=mx``).

    ``port`` (25) and ``tls_context`` (the system's trust store, for verified TLS) are
    parameters for tests, which point the MX at a sink on loopback."""

    def __init__(
        self,
        settings: Settings,
        *,
        resolver: Resolver | None = None,
        policies: Policies | None = None,
        port: int = 25,
        tls_context: ssl.SSLContext | None = None,
        connections: Connections | None = None,
    ) -> None:
        self.resolver = resolver or resolver_for(settings)
        self.policies = policies or Policies(self.resolver)
        self.port = port
        self.tls_context = tls_context
        self.connections = connections or Connections.for_settings(settings)
        self._peers: dict[str, tuple[float, list[Peer]]] = {}

    def destination(self, recipient: str) -> str:
        return recipient.rpartition("@")[2].lower()

    async def send(self, mail_from: str, recipient: str, raw: bytes) -> None:
        domain = self.destination(recipient)
        peers = await self.peers(domain)
        await self.connections.send(domain, peers, mail_from, recipient, raw)

    async def close(self) -> None:
        await self.connections.close()

    async def peers(self, domain: str) -> list[Peer]:
        """Where mail for ``domain`` goes now, in order, each secured as it must be."""
        now = time.monotonic()
        cached = self._peers.get(domain)
        if cached is not None and cached[0] > now:
            return cached[1]
        hosts = await exchanges(self.resolver, domain)
        policy = await self.policies.for_domain(domain)
        if policy is not None and policy.mode == "enforce":
            allowed = [h for h in hosts if policy.allows(h)]
            if not allowed:
                raise DeliveryError(
                    f"MTA-STS: none of {domain}'s MX hosts ({', '.join(hosts)}) is named by "
                    "its policy",
                    permanent=False,
                )
            hosts = allowed
        # Bounded work per mail, counted after the policy chose its hosts.
        peers = [peer for host in hosts[:MAX_HOSTS] for peer in await self._peers_of(host, policy)]
        if len(self._peers) > 10_000:
            self._peers.clear()  # bounded: many domains, each looked up again when due
        self._peers[domain] = (now + CACHE_SECONDS, peers)
        return peers

    async def _peers_of(self, host: str, policy: Policy | None) -> Sequence[Peer]:
        try:
            found = await addresses(self.resolver, host)
        except DeliveryError as exc:
            log.info("MX host %s has no address now (%s)", host, exc)
            return []
        enforce = policy is not None and policy.mode == "enforce"
        return [
            Peer(
                host=address,
                port=self.port,
                security="required" if enforce else "opportunistic",
                server_name=host,
                tls_context=self.tls_context,
            )
            for address in found[:MAX_HOSTS]
        ]
