"""Helpers for testing bots and deployments: in-process, or against a real running node.

In-process (no socket, no running node; mailbot/testing/harness.py):

- :class:`Harness`: one mail through the real pipeline against SQLite, the outbox delivered
  through a transport.
- :class:`RecordingTransport`: keeps what delivery asked it to send, or refuses like a relay.

Against a running node (mailbot/testing/node.py):

- :class:`SmtpSink`: a real SMTP server on loopback that keeps what it receives (use it as
  ``MAILBOT_RELAY``), and can be told to refuse or to be down.
- :func:`build_mail`: a reply email in one line.
- :func:`smtp_send`: deliver over a real SMTP connection and get every reply code back.
- :func:`wait_for_status`: wait until the worker has finished with a message.

Example::

    async with SmtpSink() as sink, running(settings_for(tmp_path, sink), app) as node:
        result = await smtp_send(node.smtp_port, "alice@example.com", [address],
                                 build_mail("alice@example.com", address, "Looks good"))
        row = await wait_for_status(node.sessions, result.inbound_id)
"""

from __future__ import annotations

from mailbot.store.models import InboundStatus
from mailbot.testing.harness import Harness, NotAccepted
from mailbot.testing.node import (
    SendResult,
    SinkedMail,
    SmtpSink,
    Store,
    Thread,
    build_mail,
    make_thread,
    reply,
    settings_for,
    smtp_send,
    wait_for_status,
)
from mailbot.testing.transport import RecordingTransport

__all__ = [
    "Harness",
    "InboundStatus",
    "NotAccepted",
    "RecordingTransport",
    "SendResult",
    "SinkedMail",
    "SmtpSink",
    "Store",
    "Thread",
    "build_mail",
    "make_thread",
    "reply",
    "settings_for",
    "smtp_send",
    "wait_for_status",
]
