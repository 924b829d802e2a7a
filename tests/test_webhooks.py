"""Issue #11: webhooks. A local HTTP receiver (a real socket) stands for the app: the event is
signed (verified here as the README tells apps to), retried after a 500, delivered once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select

from mailbot.bots.default import app
from mailbot.errors import ConfigError
from mailbot.serve import Node, running
from mailbot.store.models import WebhookDelivery, WebhookStatus
from mailbot.testing import make_thread, reply, settings_for
from tests.test_web_api import _request

SECRET = "webhook-secret-for-tests-0123456789"
TOKEN = re.compile(r"reply\+[a-z2-7]{32}@", re.IGNORECASE)


@dataclass
class Receiver:
    """Answers each POST with the next of ``answers`` (then 200), keeping what it got."""

    answers: list[int] = field(default_factory=list)
    got: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")[1:]
        fields = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines if x)
        }
        body = await reader.readexactly(int(fields.get("content-length", "0")))
        status = self.answers.pop(0) if self.answers else 200
        self.got.append((fields, body, status))
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver(answers=[500])
    server = await asyncio.start_server(found.serve, "127.0.0.1", 0)
    found.port = server.sockets[0].getsockname()[1]
    async with server:
        yield found


def verify(secret: str, header: str, body: bytes, now: float, tolerance: float = 300) -> bool:
    """What an app does (README, *Webhooks*)."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    signed = f"{parts['t']}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    fresh = abs(now - int(parts["t"])) <= tolerance
    return fresh and hmac.compare_digest(expected, parts["v1"])


async def test_an_event_is_signed_retried_after_a_500_and_delivered_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    url = f"http://127.0.0.1:{receiver.port}/hook"
    settings = settings_for(tmp_path, webhook_urls=[url], webhook_secret=SECRET)
    async with running(settings, app) as node:
        thread = await make_thread(node, people=("alice", "bob"))
        row = await reply(node, "alice@example.com", thread.addresses["alice"], "Ship it.")
        async with asyncio.timeout(30):
            while len([g for g in receiver.got if g[2] == 200]) < 2:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # anything sent twice would arrive now
        deliveries = await _deliveries(node)
        # Each delivery and its attempts show in the message's timeline (the message page).
        _, _, timeline = await _request(node.http_port, "GET", f"/api/messages/{row.id}/timeline")
    shown = {
        (step["stage"], step["result"].split(":")[0])
        for step in timeline["steps"]
        if step["stage"].startswith("webhook ")
    }
    mine = [d for d in deliveries if d.inbound_id == row.id]
    assert mine and shown == {
        (f"webhook {d.event} to 127.0.0.1", f"delivered after {d.attempts} attempt(s)")
        for d in mine
    }

    events = [(fields["mailbot-event"], status) for fields, _, status in receiver.got]
    # The first POST got 500 and was tried again; each event reached the app once with 2xx.
    assert events[0][1] == 500
    assert sorted(e for e, s in events if s == 200) == ["comment.posted", "message.delivered"]
    assert len(events) == 3
    retried = [g for g in receiver.got if g[0]["mailbot-event"] == events[0][0]]
    assert retried[0][1] == retried[1][1]  # the same bytes again
    assert retried[0][0]["mailbot-delivery"] == retried[1][0]["mailbot-delivery"]
    for fields, body, _ in receiver.got:
        assert verify(SECRET, fields["mailbot-signature"], body, time.time())
        assert not verify("another-secret", fields["mailbot-signature"], body, time.time())
        assert not verify(SECRET, fields["mailbot-signature"], body + b" ", time.time())
        assert not TOKEN.search(body.decode())
    delivered = json.loads(
        next(b for f, b, s in receiver.got if f["mailbot-event"] == "message.delivered")
    )
    assert delivered["message"]["id"] == row.id and delivered["message"]["reply_text"] == "Ship it."
    posted = json.loads(
        next(b for f, b, s in receiver.got if f["mailbot-event"] == "comment.posted")
    )
    assert posted["comment"]["body"] == "Ship it."
    assert {(d.event, d.status, d.attempts) for d in deliveries} == {
        (events[0][0], WebhookStatus.delivered, 2),
        (
            {"comment.posted", "message.delivered"}.difference({events[0][0]}).pop(),
            WebhookStatus.delivered,
            1,
        ),
    }


async def _deliveries(node: Node) -> list[WebhookDelivery]:
    async with node.sessions() as session:
        return list(await session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


async def test_webhook_urls_without_a_secret_refuse_to_start(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, webhook_urls=["http://127.0.0.1:9/hook"])
    with pytest.raises(ConfigError, match="WEBHOOK_SECRET"):
        async with running(settings, app):
            pass
