"""Delivery through one relay (``MAILBOT_RELAY=smtp://user:pass@host:port``, ``smtps://``).

Every mail goes to the relay, over connections the outbox keeps open and reuses
(mailbot/outbound/connections.py). TLS is explicit, never guessed: implicit TLS with
``smtps://``, STARTTLS required with ``MAILBOT_RELAY_STARTTLS=true`` (aiosmtplib's default
would silently stay in plain text when the relay does not offer it), plain otherwise.
"""

from __future__ import annotations

import ssl
from urllib.parse import unquote, urlsplit

from mailbot.config import Settings
from mailbot.outbound.connections import Connections, Peer


class RelayTransport:
    """The SMTP relay of ``settings.relay``."""

    def __init__(
        self,
        settings: Settings,
        *,
        connections: Connections | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        assert settings.relay
        url = urlsplit(settings.relay)
        implicit = url.scheme == "smtps"
        self.peer = Peer(
            host=url.hostname or "localhost",
            port=url.port or (465 if implicit else 25),
            security="implicit" if implicit else "required" if settings.relay_starttls else "none",
            username=unquote(url.username) if url.username else None,
            password=unquote(url.password) if url.password else None,
            tls_context=tls_context,
        )
        self.connections = connections or Connections.for_settings(settings)

    def destination(self, recipient: str) -> str:
        return "relay"  # one destination: every mail shares the relay's connections

    async def send(self, mail_from: str, recipient: str, raw: bytes) -> None:
        await self.connections.send("relay", [self.peer], mail_from, recipient, raw)

    async def close(self) -> None:
        await self.connections.close()
