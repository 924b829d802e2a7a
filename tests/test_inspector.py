"""The inspector (mailbot/bots/inspector.py): temporary addresses on inspect.<domain>, over
real SMTP, HTTP and WebSocket: mail from anyone is kept, shown live as parsed JSON, never answered;
an expired address, or another bot's token on that subdomain, is refused at RCPT."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import httpx
import websockets
from sqlalchemy import select, update

from mailbot.bots.default import app as default_app
from mailbot.serve import Node
from mailbot.store import blobs, retention, temporary
from mailbot.store.models import InboundAttachment, InboundMessage, utcnow
from mailbot.testing import (
    Harness,
    InboundStatus,
    SmtpSink,
    build_mail,
    make_thread,
    smtp_send,
    wait_for_status,
)
from tests.test_cli import _env, _mailbot

HOUR = timedelta(hours=1)


async def _new(node: Node, ttl_seconds: int = 3600) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.http_port}") as http:
        answer = await http.post("/api/inspector", json={"ttl_seconds": ttl_seconds})
    assert answer.status_code == 201, answer.text
    made: dict[str, str] = answer.json()
    return made


async def test_mail_to_a_temporary_address_is_kept_and_shown_live(
    node: Node, sink: SmtpSink
) -> None:
    made = await _new(node)
    local, _, domain = made["address"].partition("@")
    assert domain == "inspect.localhost" and len(local) == 32
    url = f"ws://127.0.0.1:{node.http_port}/api/live?q=conversation:{made['conversation']}"
    own = websockets.Origin(f"http://127.0.0.1:{node.http_port}")
    async with websockets.connect(url, origin=own) as live:
        while json.loads(await live.recv())["type"] != "ready":
            pass  # caught up: nothing yet
        # From a stranger, in upper case (tokens survive case-folding), with an attachment.
        body = "Does it parse?\n/help"  # the inspector reads no commands: it never answers
        raw = build_mail("stranger@example.net", made["address"].upper(), body)
        sent = await smtp_send(
            node.smtp_port, "stranger@example.net", [made["address"].upper()], raw
        )
        assert sent.rcpt_codes[0][0] == 250 and sent.data_code == 250
        row = await wait_for_status(node.sessions, sent.inbound_id)
        assert (row.status, row.bot) == (InboundStatus.delivered, "inspector")
        seen = None
        while seen is None or seen.get("status") != "delivered":
            event = json.loads(await live.recv())
            seen = next((m for m in event.get("messages", []) if m["id"] == row.id), seen)
    assert (seen["subject"], seen["reply_text"]) == ("Re: test", body)
    assert seen["conversation"] == made["conversation"]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.http_port}") as http:
        whole = (await http.get(f"/api/messages/{row.id}")).json()
    assert whole["parsed"]["from"][0]["address"] == "stranger@example.net"
    # The address is a credential: shown once, redacted everywhere after.
    assert local not in json.dumps(seen).lower() and local not in json.dumps(whole).lower()
    assert sink.received == []  # nothing is ever sent back


async def test_an_expired_temporary_address_and_a_foreign_token_are_refused_at_rcpt(
    node: Node,
) -> None:
    async with node.sessions() as session, session.begin():
        old = await temporary.make(
            session,
            bot="inspector",
            subdomain="inspect",
            domain="localhost",
            ttl=timedelta(seconds=-1),
        )
    thread = await make_thread(node, people=("ann",))
    comments_token = thread.addresses["ann"].split("+", 1)[1].split("@", 1)[0]
    for address, said in (
        (old.address, "expired"),
        (f"{comments_token}@inspect.localhost", "unknown"),
        ("nosuchtoken@inspect.localhost", "unknown"),
    ):
        sent = await smtp_send(
            node.smtp_port, "x@example.net", [address], b"Subject: x\r\n\r\nx\r\n"
        )
        assert sent.rcpt_codes[0][0] == 550 and said in sent.rcpt_codes[0][1], (address, sent)


async def test_inspector_new_prints_an_address_and_refuses_a_bad_ttl(tmp_path: Path) -> None:
    env = _env(tmp_path)
    address = (await _mailbot(env, "inspector", "new", "--ttl", "30m")).strip()
    assert address.endswith("@inspect.localhost") and len(address.split("@")[0]) == 32
    await _mailbot(env, "inspector", "new", "--ttl", "5s", ok=False)
    tickets = "mailbot.bots.tickets:app"  # no bot with temporary addresses
    await _mailbot(env, "inspector", "new", "--ttl", "1h", "--app", tickets, ok=False)


async def test_mail_to_a_temporary_address_is_removed_whole_after_its_retention(
    tmp_path: Path,
) -> None:
    async with Harness(default_app, tmp_path, inspector_retention_hours=2) as h:
        async with h.sessions() as session, session.begin():
            made = await temporary.make(
                session, bot="inspector", subdomain="inspect", domain="localhost", ttl=HOUR
            )
        thread = await h.thread(people=("ann",))
        file = [("log.txt", b"the log")]
        old, young, comment = [
            await h.receive(build_mail(sender, to, "look", attachments=file))
            for sender, to in (
                ("x@example.net", made.address),
                ("y@example.net", made.address),
                ("ann@example.com", thread.addresses["ann"]),
            )
        ]
        assert old.status is young.status is comment.status is InboundStatus.delivered
        async with h.sessions() as session, session.begin():  # two of them, three hours ago
            earlier = utcnow() - 3 * HOUR
            ids = [old.id, comment.id]
            await session.execute(
                update(InboundMessage).where(InboundMessage.id.in_(ids)).values(received_at=earlier)
            )
        store = blobs.for_settings(h.settings)
        report = await retention.run_once(h.sessions, store, h.settings, ["inspector"])
        async with h.sessions() as session:
            rows = {
                row.id: row
                for row in await session.scalars(select(InboundMessage).order_by(InboundMessage.id))
            }
            files = {a.inbound_id for a in await session.scalars(select(InboundAttachment))}
    assert report.messages == 1
    gone = rows[old.id]
    assert gone.parsed is None and gone.reply_text is None and gone.purged_at is not None
    assert gone.outcome == {"removed": "temporary address retention"}
    assert gone.status is InboundStatus.delivered  # that it came stays, not what it said
    # Younger inspector mail, and the comments bot's mail of the same age, are kept.
    assert rows[young.id].parsed is not None and rows[comment.id].parsed is not None
    assert files == {young.id, comment.id}
