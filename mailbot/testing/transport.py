"""A recording outbound transport, in the spirit of httpx's ``MockTransport``.

Give it to :func:`mailbot.outbound.delivery.deliver_due` (or to :class:`mailbot.testing.Harness`) in
place of the relay: it keeps every message it was asked to send, or answers like a relay that
refuses (``reply = "451 4.3.0 try later"``), as :class:`mailbot.testing.SmtpSink` does over
a real socket.
"""

from __future__ import annotations

import re

from mailbot.errors import DeliveryError
from mailbot.testing.node import SinkedMail

_REPLY = re.compile(r"([2-5]\d\d)\b")


class RecordingTransport:
    """Keeps what it is asked to send; or refuses it with ``reply``, a relay's answer line."""

    def __init__(self, reply: str | None = None) -> None:
        self.reply = reply  # e.g. "451 4.3.0 try later" (stays queued) or "550 5.1.1 no"
        self.sent: list[SinkedMail] = []
        self.refused: list[SinkedMail] = []  # asked, and answered with ``reply``

    async def send(self, mail_from: str, recipient: str, raw: bytes) -> None:
        mail = SinkedMail(mail_from, [recipient], raw)
        if self.reply is None or self.reply.startswith("2"):
            self.sent.append(mail)
            return
        self.refused.append(mail)
        found = _REPLY.match(self.reply)
        code = int(found.group(1)) if found else 451  # not a reply line: a transient problem
        raise DeliveryError(self.reply, permanent=code >= 500)

    def to(self, address: str) -> list[SinkedMail]:
        """What was sent to ``address`` (case-insensitive)."""
        address = address.lower()
        return [m for m in self.sent if address in (r.lower() for r in m.rcpt_tos)]
