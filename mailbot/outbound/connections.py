"""The outbox's SMTP connections: opened as needed, shared by the mails to one destination.

A destination is where a mail goes: the relay, or one recipient domain's MX hosts. Mails to
one destination go over the same connection one after another (Postfix calls this connection
caching); at most ``per_destination`` connections to one destination and ``total`` in all are
open at once. A destination is a list of :class:`Peer` tried in order (the MX hosts by
preference, each of their addresses): a peer that does not answer, greets with an error or
cannot secure the connection as required is skipped for the next.

Every SMTP answer becomes a :class:`DeliveryError` that says whether it is final (5xx) or
worth trying again (4xx, timeouts, connection trouble).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import aiosmtplib

from mailbot.config import Settings
from mailbot.errors import DeliveryError

log = logging.getLogger(__name__)

PROBE_AFTER = 2.0  # seconds idle after which a kept connection is asked NOOP before reuse

# How a peer is secured: "implicit" TLS from the first byte (smtps), "required" STARTTLS
# (a relay that asks for it, an MTA-STS enforce policy), "opportunistic" (STARTTLS when
# offered, unverified, as MTAs do between each other; a failed handshake falls back to plain),
# or "none".
Security = Literal["implicit", "required", "opportunistic", "none"]


@dataclass(frozen=True)
class Peer:
    """One SMTP server to try for a destination."""

    host: str  # what to connect to: a name or an address
    port: int
    security: Security = "none"
    # The name its certificate must carry when verified ("implicit" and "required"); None:
    # ``host``. An MX reached by its address is verified under the MX name.
    server_name: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_context: ssl.SSLContext | None = None  # None: the system's trust store

    def verified_context(self) -> ssl.SSLContext:
        return self.tls_context or ssl.create_default_context()


def _unverified() -> ssl.SSLContext:
    # Opportunistic TLS: encrypted against passive reading, as between MTAs; not
    # authenticated (RFC 7435). MTA-STS is what makes it checked.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class _Open:
    """A connection kept for reuse: which peer it reached (and so how it was secured)."""

    smtp: aiosmtplib.SMTP
    peer: Peer
    used_at: float


class Connections:
    """Open SMTP connections by destination, reused for the next mail to the same one.

    At most ``per_destination`` connections to one destination and ``total`` in all are in
    use at once, and as many again may wait idle (the least recently used is closed first).
    A kept connection is reused only for the same peer, secured the same way: a destination
    whose MTA-STS policy now requires TLS never gets a connection opened in plain before.
    """

    def __init__(
        self, *, local_hostname: str, timeout: float, per_destination: int = 2, total: int = 20
    ) -> None:
        self.local_hostname = local_hostname
        self.timeout = timeout
        self.per_destination = max(1, per_destination)
        self.total = max(1, total)
        self._idle: dict[str, list[_Open]] = defaultdict(list)
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._in_use: dict[str, int] = defaultdict(int)
        self._total = asyncio.Semaphore(self.total)
        self.opened = 0  # connections opened since start, for logs and tests

    @classmethod
    def for_settings(cls, settings: Settings) -> Connections:
        return cls(
            local_hostname=settings.hostname,
            timeout=settings.relay_timeout,
            per_destination=settings.delivery_connections_per_destination,
            total=settings.delivery_connections,
        )

    async def send(
        self, destination: str, peers: Sequence[Peer], mail_from: str, recipient: str, raw: bytes
    ) -> None:
        """One mail over a connection to ``destination``: an idle one, or a new one."""
        slots = self._slots.setdefault(destination, asyncio.Semaphore(self.per_destination))
        async with slots, self._total:
            self._in_use[destination] += 1
            try:
                kept = await self._kept(destination, peers)
                if kept is None:
                    kept = await self._open(peers)
                try:
                    await self._transaction(kept.smtp, mail_from, recipient, raw)
                except BaseException:
                    await _quit(kept.smtp)
                    raise
                kept.used_at = time.monotonic()
                await self._keep(destination, kept)
            finally:
                self._in_use[destination] -= 1
                if not self._in_use[destination]:
                    del self._in_use[destination]
                    if not self._idle.get(destination):
                        self._slots.pop(destination, None)  # bounded: only busy or kept ones

    async def close(self) -> None:
        """QUIT every idle connection (the outbox has nothing more to send for now)."""
        idle, self._idle = self._idle, defaultdict(list)
        for destination in idle:
            if destination not in self._in_use:
                self._slots.pop(destination, None)
        await asyncio.gather(*(_quit(kept.smtp) for conns in idle.values() for kept in conns))

    async def _kept(self, destination: str, peers: Sequence[Peer]) -> _Open | None:
        """An idle connection to one of ``peers`` that still answers, or None."""
        idle = self._idle.get(destination, [])
        while idle:
            kept = idle.pop()
            if not kept.smtp.is_connected or kept.peer not in peers:
                await _quit(kept.smtp)
                continue
            if time.monotonic() - kept.used_at > PROBE_AFTER:
                # Idle a while: it may have timed us out. A NOOP tells before any mail is
                # given to it, so a hang-up later in a transaction is never retried blindly.
                try:
                    async with asyncio.timeout(self.timeout):
                        await kept.smtp.noop()
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    kept.smtp.close()
                    continue
            return kept
        return None

    async def _keep(self, destination: str, kept: _Open) -> None:
        self._idle[destination].append(kept)
        idle = [(k.used_at, d, k) for d, conns in self._idle.items() for k in conns]
        if len(idle) > self.total:  # the least recently used goes
            _, where, oldest = min(idle, key=lambda item: item[0])
            self._idle[where].remove(oldest)
            if not self._idle[where]:
                del self._idle[where]
            await _quit(oldest.smtp)

    async def _transaction(
        self, smtp: aiosmtplib.SMTP, mail_from: str, recipient: str, raw: bytes
    ) -> None:
        try:
            # aiosmtplib's timeout is per socket operation; bound the whole transaction too.
            async with asyncio.timeout(self.timeout * 3):
                errors, _ = await smtp.sendmail(mail_from, [recipient], raw)
        except aiosmtplib.SMTPServerDisconnected as exc:
            raise DeliveryError(f"the server hung up: {exc}", permanent=False) from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusal = exc.recipients[0]
            raise DeliveryError(
                f"{refusal.code} {refusal.message}", permanent=refusal.code >= 500
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(f"{exc.code} {exc.message}", permanent=exc.code >= 500) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(f"lost the connection: {exc!r}", permanent=False) from exc
        if errors:
            code, message = next(iter(errors.values()))
            raise DeliveryError(f"{code} {message}", permanent=code >= 500)

    async def _open(self, peers: Sequence[Peer]) -> _Open:
        """A connection to the first peer that takes one, secured as that peer requires."""
        problems: list[str] = []
        for peer in peers:
            try:
                smtp = await self._connect(peer, tls=peer.security != "none")
            except _Skip as exc:
                problems.append(f"{peer.server_name or peer.host}: {exc}")
                continue
            except ssl.SSLError as exc:
                if peer.security != "opportunistic":
                    problems.append(f"{peer.server_name or peer.host}: TLS failed: {exc}")
                    continue
                # Opportunistic: a broken handshake is no reason not to deliver in plain.
                log.info("STARTTLS with %s failed (%s); in plain text", peer.host, exc)
                try:
                    smtp = await self._connect(peer, tls=False)
                except _Skip as again:
                    problems.append(f"{peer.server_name or peer.host}: {again}")
                    continue
            self.opened += 1
            return _Open(smtp, peer, 0.0)
        if not problems:
            raise DeliveryError("nowhere to connect: no host for this destination", permanent=False)
        raise DeliveryError("no server took the mail: " + "; ".join(problems[:5]), permanent=False)

    async def _connect(self, peer: Peer, *, tls: bool) -> aiosmtplib.SMTP:
        implicit = peer.security == "implicit"
        smtp = aiosmtplib.SMTP(
            hostname=peer.host,
            port=peer.port,
            use_tls=implicit,
            start_tls=False,  # done below, explicitly: never silently in plain when required
            timeout=self.timeout,
            local_hostname=self.local_hostname,
            tls_context=peer.verified_context() if implicit else None,
        )
        try:
            await smtp.connect()
            await smtp.ehlo()
            if tls and not implicit:
                if not smtp.supports_extension("starttls"):
                    if peer.security == "required":
                        raise _Skip("offers no STARTTLS, and TLS is required")
                else:
                    verified = peer.security == "required"
                    await smtp.starttls(
                        server_hostname=peer.server_name or peer.host,
                        tls_context=peer.verified_context() if verified else _unverified(),
                    )
                    await smtp.ehlo()
            if peer.username:
                await smtp.login(peer.username, peer.password or "")
        except ssl.SSLError:
            smtp.close()
            raise
        except _Skip:
            await _quit(smtp)
            raise
        except aiosmtplib.SMTPAuthenticationError as exc:
            smtp.close()
            raise _Skip(f"refused our login: {exc.code} {exc.message}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            smtp.close()
            raise _Skip(f"answered {exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            smtp.close()
            raise _Skip(f"unreachable: {exc!r}") from exc
        return smtp


class _Skip(Exception):
    """This peer cannot be used; try the next."""


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    try:
        async with asyncio.timeout(5):
            if smtp.is_connected:
                await smtp.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        pass
    finally:
        smtp.close()
