"""Issue #11: the API an app writes to, its OpenAPI description, health, and the guards on
writes and on the live socket. A real node; HTTP and WebSocket over real sockets."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from pydantic import BaseModel

from mailbot.bots.default import app
from mailbot.serve import Node, running
from mailbot.store.db import database, upgrade
from mailbot.testing import (
    InboundStatus,
    build_mail,
    settings_for,
    smtp_send,
    wait_for_status,
)
from mailbot.web import shapes, views
from mailbot.web.conversations import ReplyAddress, Revoked
from mailbot.web.inspector import Made

TOKEN = re.compile(r"reply\+([a-z2-7]{32})@", re.IGNORECASE)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with running(settings_for(tmp_path), app) as node:
        yield node


async def _request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw_body: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    data = raw_body if raw_body is not None else b"" if body is None else json.dumps(body).encode()
    fields = {"Host": "127.0.0.1", "Connection": "close", "Content-Length": str(len(data))}
    if body is not None:
        fields["Content-Type"] = "application/json"
    fields.update(headers or {})
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    writer.write(f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode() + data)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    top, _, content = answer.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    got = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    text = content.decode()
    parsed = (
        json.loads(text) if got.get("content-type", "").startswith("application/json") else text
    )
    return int(status_line.split()[1]), got, parsed


async def _mint(node: Node, key: str, email: str) -> str:
    """A live reply address for ``email`` in conversation ``key``, through the API."""
    code, _, minted = await _request(
        node.http_port, "POST", f"/api/conversations/{key}/reply-address", {"email": email}
    )
    assert code == 201, minted
    return str(minted["reply_to"])


@pytest.fixture
async def pg_node(tmp_path: Path, postgres_url: str) -> AsyncIterator[Node]:
    async with database(postgres_url) as (engine, _):
        await upgrade(engine)
    async with running(settings_for(tmp_path, database_url=postgres_url), app) as node:
        yield node


async def test_an_app_creates_a_conversation_mints_an_address_and_revokes_it(node: Node) -> None:
    port = node.http_port
    code, _, made = await _request(
        port, "POST", "/api/conversations", {"key": "ticket-7", "subject": "Printer"}
    )
    assert code == 201 and made["key"] == "ticket-7"

    person = {"email": "alice@example.com", "name": "Alice"}
    code, fields, minted = await _request(
        port, "POST", "/api/conversations/ticket-7/reply-address", person
    )
    assert code == 201, minted
    assert fields["cache-control"] == "no-store"
    address = minted["reply_to"]
    assert TOKEN.fullmatch(address.split("@")[0] + "@") or TOKEN.match(address)

    # The address works: mail to it is accepted and becomes a comment.
    raw = build_mail("alice@example.com", address, "Fixed it myself.")
    sent = await smtp_send(node.smtp_port, "alice@example.com", [address], raw)
    row = await wait_for_status(node.sessions, sent.inbound_id)
    assert row.status.value == "delivered", row.reason
    code, _, convo = await _request(port, "GET", "/api/conversations/ticket-7")
    assert [c["body"] for c in convo["comments"]] == ["Fixed it myself."]

    # Revoked, it is refused at RCPT; revoking twice says so.
    code, _, done = await _request(port, "POST", "/api/tokens/revoke", {"address": address})
    assert (code, done) == (200, {"revoked": True})
    code, _, again = await _request(port, "POST", "/api/tokens/revoke", {"address": address})
    assert again == {"revoked": False}
    refused = await smtp_send(node.smtp_port, "alice@example.com", [address], raw)
    assert refused.rcpt_codes[0][0] == 550


async def test_a_notification_is_queued_without_showing_its_live_address(node: Node) -> None:
    note = {
        "email": "bob@example.com",
        "name": "Bob",
        "subject": "New ticket",
        "body": "Someone opened ticket 9.",
    }
    code, fields, queued = await _request(
        node.http_port, "POST", "/api/conversations/ticket-9/notify", note
    )
    assert code == 201, queued
    assert queued["recipient"] == "bob@example.com" and queued["subject"] == "New ticket"
    assert queued["reply_token"]["fingerprint"]
    assert not TOKEN.search(json.dumps(queued))


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"email": "not an address"}, "address"),
        ({"email": "a@example.com, b@example.com"}, "address"),
        ({"email": "Eve <eve@example.com>"}, "address"),
        ({"name": "no email"}, "email"),
        ({"email": "x" * 400 + "@example.com"}, "email"),
    ],
)
async def test_bad_writes_get_a_json_400(node: Node, body: dict[str, str], why: str) -> None:
    code, _, answer = await _request(
        node.http_port, "POST", "/api/conversations/t/reply-address", body
    )
    assert code == 400, answer
    assert why in answer["error"].lower()


async def test_writes_from_another_sites_page_are_refused(node: Node) -> None:
    person = {"email": "alice@example.com"}
    path = "/api/conversations/t/reply-address"
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1.evil.example:8025"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        code, _, answer = await _request(node.http_port, "POST", path, person, headers)
        assert code == 403, (headers, answer)
    # A form post (what another site can send without asking) is not JSON: refused too.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    code, _, _ = await _request(
        node.http_port, "POST", path, headers=form, raw_body=b"email=alice%40example.com"
    )
    assert code == 400
    # Our own page's origin is fine.
    own = {"Origin": f"http://127.0.0.1:{node.http_port}", "Host": f"127.0.0.1:{node.http_port}"}
    code, _, _ = await _request(node.http_port, "POST", path, person, own)
    assert code == 201


async def test_the_live_socket_refuses_other_origins_and_greets_our_own(node: Node) -> None:
    url = f"ws://127.0.0.1:{node.http_port}/api/live"
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with websockets.connect(url, origin=websockets.Origin("http://evil.example")):
            pass
    assert refused.value.response.status_code == 403
    own = websockets.Origin(f"http://127.0.0.1:{node.http_port}")
    async with websockets.connect(url + "?since=2000-01-01T00:00:00%2B00:00", origin=own) as ws:
        first = json.loads(await ws.recv())
        assert first == {"type": "messages", "messages": [], "catch_up": True, "more": False}
        assert json.loads(await ws.recv()) == {"type": "ready"}


async def test_openapi_describes_every_api_route_and_docs_are_served(node: Node) -> None:
    code, _, spec = await _request(node.http_port, "GET", "/openapi.json")
    assert code == 200
    paths = set(spec["paths"])
    for route in (
        "/api/messages",
        "/api/messages/{id}",
        "/api/messages/{id}/timeline",
        "/api/messages/{id}/raw",
        "/api/messages/{id}/html",
        "/api/outbox",
        "/api/conversations",
        "/api/conversations/{key}/reply-address",
        "/api/conversations/{key}/notify",
        "/api/tokens/revoke",
        "/health/ready",
    ):
        assert route in paths, route
    code, _, page = await _request(node.http_port, "GET", "/docs")
    assert code == 200 and "swagger" in page.lower()


async def test_health_says_live_and_ready(node: Node) -> None:
    code, _, live = await _request(node.http_port, "GET", "/health/live")
    assert code == 200 and live["status"] == "ok"
    code, _, ready = await _request(node.http_port, "GET", "/health/ready")
    assert (code, ready["status"], ready["backlog"]) == (200, "ok", 0)


async def test_the_raw_source_hides_an_address_the_client_wrote_in_base64(node: Node) -> None:
    from email import message_from_string, policy
    from email.message import EmailMessage

    address = await _mint(node, "t", "alice@example.com")
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "alice@example.com", address, "Ré"
    mail.set_content(f"Très bien.\n\nLe lundi, <{address}> a écrit :\n> ok\n", cte="base64")
    sent = await smtp_send(node.smtp_port, "alice@example.com", [address], mail.as_bytes())
    await wait_for_status(node.sessions, sent.inbound_id)
    code, fields, raw = await _request(
        node.http_port, "GET", f"/api/messages/{sent.inbound_id}/raw"
    )
    assert code == 200 and fields["x-content-type-options"] == "nosniff"
    shown = message_from_string(raw, policy=policy.default)
    body = shown.get_body()
    assert body is not None
    text = body.get_content()
    assert "Très bien." in text and "a écrit" in text
    token = TOKEN.search(address)
    assert token is not None
    assert token[1].lower() not in (raw + text).lower()


async def test_operator_actions_answer_for_the_wrong_state_in_words(node: Node) -> None:
    port = node.http_port
    note = {"email": "bob@example.com", "subject": "S", "body": "B"}
    _, _, queued = await _request(port, "POST", "/api/conversations/k/notify", note)
    code, _, cancelled = await _request(port, "POST", f"/api/outbox/{queued['id']}/cancel")
    assert code == 200 and cancelled["status"] == "failed"
    assert cancelled["reason"] == "cancelled by an operator"
    code, _, again = await _request(port, "POST", f"/api/outbox/{queued['id']}/cancel")
    assert code == 409 and "failed already" in again["error"]
    assert (await _request(port, "POST", "/api/outbox/999/cancel"))[0] == 404

    address = await _mint(node, "k", "a@example.com")
    raw = build_mail("a@example.com", address, "Fine.")
    sent = await smtp_send(node.smtp_port, "a@example.com", [address], raw)
    await wait_for_status(node.sessions, sent.inbound_id)
    release = await _request(port, "POST", f"/api/quarantine/{sent.inbound_id}/release")
    assert release[0] == 404 and "not quarantined" in release[2]["error"]
    delete = await _request(port, "DELETE", f"/api/quarantine/{sent.inbound_id}")
    assert delete[0] == 404
    learn = await _request(port, "POST", f"/api/messages/{sent.inbound_id}/learn", {"kind": "spam"})
    assert learn[0] == 409 and "MAILBOT_SPAMD" in learn[2]["error"]
    bad = await _request(port, "POST", f"/api/messages/{sent.inbound_id}/learn", {"kind": "eggs"})
    assert bad[0] == 400
    code, _, listed = await _request(port, "GET", "/api/conversations")
    assert code == 200 and [(c["key"], c["participants"], c["comments"]) for c in listed] == [
        ("k", 2, 1)
    ]


async def test_metrics_count_messages_by_status_and_time_the_pipeline(node: Node) -> None:
    address = await _mint(node, "m", "a@example.com")
    raw = build_mail("a@example.com", address, "Counted.")
    sent = await smtp_send(node.smtp_port, "a@example.com", [address], raw)
    await wait_for_status(node.sessions, sent.inbound_id)
    code, fields, text = await _request(node.http_port, "GET", "/metrics")
    assert code == 200 and fields["content-type"].startswith("text/plain")
    lines = text.splitlines()
    assert 'mailbot_inbound_messages{status="delivered"} 1.0' in lines
    assert 'mailbot_inbound_messages{status="rejected"} 0.0' in lines
    assert 'mailbot_outbound_messages{status="held"} 0.0' in lines
    count = [line for line in lines if line.startswith("mailbot_pipeline_seconds_count")]
    assert any('status="delivered"' in line and not line.endswith(" 0.0") for line in count)
    assert not [line for line in lines if line.startswith(("mailbot_spamd_up", "mailbot_relay_up"))]


async def test_another_port_of_localhost_is_another_site(node: Node) -> None:
    path = "/api/conversations/t/reply-address"
    other = {
        "Origin": f"http://127.0.0.1:{node.http_port + 1}",
        "Host": f"127.0.0.1:{node.http_port}",
    }
    code, _, _ = await _request(node.http_port, "POST", path, {"email": "a@example.com"}, other)
    assert code == 403
    for bare in ("/api/outbox/1/cancel", "/api/tokens/1/revoke", "/api/quarantine/1/release"):
        code, _, _ = await _request(node.http_port, "POST", bare, headers=other)
        assert code == 403, bare
    url = f"ws://127.0.0.1:{node.http_port}/api/live"
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(url, origin=websockets.Origin(other["Origin"])):
            pass


@pytest.mark.parametrize("query", ["%00", "from:%00", "subject:x%00", "%E2%80%AE%01"])
async def test_control_characters_in_a_search_are_not_a_server_error(
    node: Node, query: str
) -> None:
    code, _, answer = await _request(node.http_port, "GET", f"/api/messages?q={query}")
    assert code == 200 and answer == []


@pytest.mark.postgres
async def test_apps_creating_the_same_conversation_at_once_all_get_an_answer(
    pg_node: Node,
) -> None:
    node = pg_node
    person = {"email": "ann@example.com"}
    answers = await asyncio.gather(
        *(
            _request(node.http_port, "POST", "/api/conversations/race/reply-address", person)
            for _ in range(8)
        ),
        *(
            _request(node.http_port, "POST", "/api/conversations", {"key": "race-2"})
            for _ in range(8)
        ),
    )
    assert [code for code, _, _ in answers] == [201] * 16
    addresses = {body["reply_to"] for _, _, body in answers[:8]}
    assert len(addresses) == 8  # each call its own address, one participant
    code, _, convo = await _request(node.http_port, "GET", "/api/conversations/race")
    assert [p["email"] for p in convo["participants"]] == ["ann@example.com"]


async def test_stats_count_this_hours_mail_by_status_with_its_latency(node: Node) -> None:
    address = await _mint(node, "s", "a@example.com")
    for _ in range(2):
        raw = build_mail("a@example.com", address, "Counted.")
        sent = await smtp_send(node.smtp_port, "a@example.com", [address], raw)
        await wait_for_status(node.sessions, sent.inbound_id)
    code, _, stats = await _request(node.http_port, "GET", "/api/stats?hours=3")
    assert code == 200 and len(stats["hours"]) == 4 and stats["cut"] is False
    # Both in this hour (or the one before, when the test runs across the hour).
    busy = [h for h in stats["hours"] if h["by_status"]]
    assert sum(h["by_status"].get("delivered", 0) for h in busy) == 2
    assert busy and busy[-1] in stats["hours"][-2:]
    assert all(set(h["by_status"]) == {"delivered"} and h["latency_p50_ms"] > 0 for h in busy)
    assert all(h["spam_rate"] is None for h in busy)  # nothing scanned: no rate, not 0 %
    assert (await _request(node.http_port, "GET", "/api/stats?hours=0"))[0] == 400


async def test_search_finds_non_ascii_senders_and_words(node: Node) -> None:
    address = await _mint(node, "u", "j@example.com")
    mail = build_mail("Jürgen Groß <j@example.com>", address, "Das Café ist zu.", subject="Grüße")
    sent = await smtp_send(node.smtp_port, "j@example.com", [address], mail)
    await wait_for_status(node.sessions, sent.inbound_id)
    for query in ("from:Jürgen", "subject:grüße", "café", "Groß"):
        code, _, found = await _request(
            node.http_port, "GET", "/api/messages?q=" + urllib.parse.quote(query)
        )
        assert code == 200 and [m["id"] for m in found] == [sent.inbound_id], query


@pytest.mark.postgres
async def test_the_list_and_search_read_the_same_on_postgresql(
    pg_node: Node,
) -> None:
    node = pg_node
    address = await _mint(node, "p", "j@example.com")
    mail = build_mail("Jürgen <j@example.com>", address, "Café.", subject="Grüße")
    sent = await smtp_send(node.smtp_port, "j@example.com", [address], mail)
    await wait_for_status(node.sessions, sent.inbound_id)
    code, _, [listed] = await _request(node.http_port, "GET", "/api/messages")
    assert code == 200 and listed["subject"] == "Grüße"
    assert [a["address"] for a in listed["from"]] == ["j@example.com"]
    for query in ("from:jürgen", "subject:GRÜ", "café", "%00", "status:delivered"):
        code, _, found = await _request(
            node.http_port, "GET", "/api/messages?q=" + urllib.parse.quote(query)
        )
        expected = [] if query == "%00" else [sent.inbound_id]
        assert code == 200 and [m["id"] for m in found] == expected, query


async def test_a_conversation_for_a_bot_the_node_does_not_have_is_refused(node: Node) -> None:
    port = node.http_port
    code, _, answer = await _request(
        port, "POST", "/api/conversations", {"key": "ticket-9", "bot": "nosuch"}
    )
    assert code == 400 and "no bot named 'nosuch'" in answer["error"], answer
    code, _, _missing = await _request(port, "GET", "/api/conversations/ticket-9")
    assert code == 404  # nothing was made
    code, _, made = await _request(
        port, "POST", "/api/conversations", {"key": "ticket-9", "bot": "comments"}
    )
    assert code == 201 and made["bot"] == "comments", made


async def test_roles_set_through_the_api_and_a_mute_by_mail_show_on_the_conversation(
    node: Node,
) -> None:
    person = {"email": "Ann@Example.com", "roles": ["maintainer", "triage"]}
    code, _, added = await _request(
        node.http_port, "POST", "/api/conversations/r/participants", person
    )
    assert code == 201 and added["roles"] == ["maintainer", "triage"]
    bad = {"email": "bo@example.com", "roles": ["Not A Role\r\nX: y"]}
    refused = await _request(node.http_port, "POST", "/api/conversations/r/participants", bad)
    assert refused[0] == 400

    # A reply of "/unsubscribe" over SMTP (the comments bot's command) mutes its sender.
    address = await _mint(node, "r", "bo@example.com")
    raw = build_mail("bo@example.com", address, "/unsubscribe")
    sent = await smtp_send(node.smtp_port, "bo@example.com", [address], raw)
    row = await wait_for_status(node.sessions, sent.inbound_id)
    assert row.status is InboundStatus.delivered and row.outcome
    assert [c["status"] for c in row.outcome["commands"]] == ["done"]

    code, _, convo = await _request(node.http_port, "GET", "/api/conversations/r")
    people = {p["email"]: (p["roles"], p["muted"]) for p in convo["participants"]}
    assert people == {
        "ann@example.com": (["maintainer", "triage"], False),
        "bo@example.com": ([], True),
    }
    assert convo["comments"] == [] and convo["state"] == {}


def _model_for(spec: dict[str, Any], path: str, method: str) -> tuple[type[BaseModel], bool]:
    """The model the description names for an operation's 2xx answer, and whether the
    answer is a list of it."""
    answers = spec["paths"][path][method]["responses"]
    ok = next(code for code in answers if code.startswith("2"))
    schema = answers[ok]["content"]["application/json"]["schema"]
    many = schema.get("type") == "array"
    name = (schema["items"] if many else schema)["$ref"].rsplit("/", 1)[1]
    known = {**{m.__name__: m for m in vars(shapes).values() if isinstance(m, type)}}
    known.update(ReplyAddress=ReplyAddress, Revoked=Revoked, Made=Made)
    return known[name], many


async def test_every_json_answer_matches_the_model_openapi_names_for_it(node: Node) -> None:
    port = node.http_port
    _, _, spec = await _request(port, "GET", "/openapi.json")
    note = {"email": "bob@example.com", "subject": "S", "body": "B"}
    calls: list[tuple[str, str, str, Any]] = [
        ("post", "/api/conversations", "/api/conversations", {"key": "k", "subject": "Hi"}),
        ("post", "/api/conversations/{key}/participants", "/api/conversations/k/participants",
         {"email": "carol@example.com", "roles": ["staff"]}),
        ("post", "/api/conversations/{key}/notify", "/api/conversations/k/notify", note),
    ]  # fmt: skip
    for method, route, path, body in calls:
        code, _, answer = await _request(port, method.upper(), path, body)
        assert code == 201, answer
        model, _ = _model_for(spec, route, method)
        model.model_validate(answer)
    queued = answer
    address = await _mint(node, "k", "a@example.com")
    raw = build_mail("a@example.com", address, "Fine.", attachments=[("a.txt", b"hello")])
    sent = await smtp_send(node.smtp_port, "a@example.com", [address], raw)
    await wait_for_status(node.sessions, sent.inbound_id)
    i, o = sent.inbound_id, queued["id"]
    reads = [
        ("get", "/health", "/health"),
        ("get", "/health/live", "/health/live"),
        ("get", "/health/ready", "/health/ready"),
        ("get", "/api/messages", "/api/messages"),
        ("get", "/api/messages/{id}", f"/api/messages/{i}"),
        ("get", "/api/messages/{id}/timeline", f"/api/messages/{i}/timeline"),
        ("get", "/api/inbound/{id}/attachments", f"/api/inbound/{i}/attachments"),
        ("get", "/api/outbox", "/api/outbox"),
        ("get", "/api/conversations", "/api/conversations"),
        ("get", "/api/conversations/{key}", "/api/conversations/k"),
        ("get", "/api/stats", "/api/stats"),
        ("post", "/api/outbox/{id}/cancel", f"/api/outbox/{o}/cancel"),
        ("post", "/api/outbox/{id}/retry", f"/api/outbox/{o}/retry"),
        ("delete", "/api/session", "/api/session"),
    ]
    for method, route, path in reads:
        code, _, answer = await _request(port, method.upper(), path)
        assert code == 200, (path, answer)
        model, many = _model_for(spec, route, method)
        for item in answer if many else [answer]:
            shaped = model.model_validate(item)
            # The model passes the view's answer on as it is: nothing dropped, nothing added.
            assert shaped.model_dump(by_alias=True, exclude_unset=True) == item, path
        assert answer, path  # each list had something in it to check
    message = (await _request(port, "GET", f"/api/messages/{i}"))[2]
    assert message["attachments"][0]["filename"] == "a.txt" and message["from"]


async def test_a_field_a_model_does_not_name_is_passed_on_not_a_server_error(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def inbox(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return [{**row, "new_field": {"x": 1}} for row in await listed(*args, **kwargs)]

    listed = views.inbox
    monkeypatch.setattr(views, "inbox", inbox)
    address = await _mint(node, "k", "a@example.com")
    raw = build_mail("a@example.com", address, "Fine.")
    await smtp_send(node.smtp_port, "a@example.com", [address], raw)
    code, _, answer = await _request(node.http_port, "GET", "/api/messages")
    assert code == 200 and answer[0]["new_field"] == {"x": 1}
