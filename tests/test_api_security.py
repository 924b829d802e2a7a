"""Issue #8, finding 6: the HTTP API and the CLI never show a live reply token or return path,
and the HTTP side is closed by default (bind, bearer token, Host allow-list, parameters).

Everything runs against a real node: mail over SMTP on loopback, HTTP over a real socket,
the CLI as a subprocess on the node's database.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import undefer

from mailbot.bots.default import app
from mailbot.errors import ConfigError
from mailbot.redact import fingerprint, redact, redact_bytes
from mailbot.serve import Node, running
from mailbot.store import api_tokens
from mailbot.store.db import database, upgrade
from mailbot.store.models import OutboundMessage, OutboundStatus
from mailbot.store.tokens import hash_token, mint_token
from mailbot.testing import SmtpSink, build_mail, make_thread, reply, settings_for
from mailbot.web.guard import check_exposure_now
from tests.test_cli import MAILBOT, _env, _free_port, _mailbot

API_TOKEN = "test-api-token-4b1d7e0c9a"
_TOKEN_IN = re.compile(r"reply\+([a-z2-7]{32})@", re.IGNORECASE)
_VERP_IN = re.compile(r"bounces\+([0-9a-f]{20})@", re.IGNORECASE)


# --- a small HTTP/1.1 client over a real socket (no HTTP client library in the venv) ---------


async def _http(
    port: int,
    path: str,
    *,
    host: str | None = "127.0.0.1",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.1", "Connection: close"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), fields, body.decode()


async def _json(port: int, path: str, status: int = 200, **options: Any) -> Any:
    code, _, body = await _http(port, path, **options)
    assert code == status, (path, code, body)
    return json.loads(body)


# --- a conversation whose secrets are all stored somewhere --------------------------------


async def _outbox_rows(node: Node) -> list[OutboundMessage]:
    async with node.sessions() as session:
        query = select(OutboundMessage).order_by(OutboundMessage.id)
        return list(await session.scalars(query))


async def _secrets_after_a_reply(node: Node, sink: SmtpSink) -> dict[str, str]:
    """Alice replies over SMTP, pasting her own address (upper-cased, URL- and QP-encoded)
    into the subject, the text and the quote; the comment to Bob is refused by the relay for
    now, so the outbox holds his live reply address. Returns name → every live secret."""
    sink.data_reply = "451 4.3.0 try later"
    thread = await make_thread(node, people=("alice", "bob"))
    alice = thread.addresses["alice"]
    token = _found(_TOKEN_IN, alice)
    body = (
        f"Agreed, ship it. Write to {alice.upper()} or mailto:reply%2B{token}@localhost\n"
        f"(the token alone: {token}).\n\n"
        f"On Mon, 1 Jan 2029, Bob <bob@example.com> wrote:\n> reply=2B{token}@localhost\n"
    )
    raw = build_mail("alice@example.com", alice, body, subject=f"Re: ping {alice}")
    row = await reply(node, "alice@example.com", alice, raw)
    assert row.status.value == "delivered", row.reason
    async with asyncio.timeout(30):
        while not [r for r in await _outbox_rows(node) if r.attempts >= 1]:
            await asyncio.sleep(0.05)
    [queued] = await _outbox_rows(node)
    assert queued.status == OutboundStatus.deferred and queued.reply_to
    return {
        "alice": token,
        "bob": _found(_TOKEN_IN, queued.reply_to),
        "verp": _found(_VERP_IN, queued.mail_from),
    }


def _found(pattern: re.Pattern[str], text: str) -> str:
    match = pattern.search(text)
    assert match is not None, text
    return match[1]


def _assert_nothing_live(text: str, secrets: dict[str, str], where: str) -> None:
    for name, secret in secrets.items():
        assert secret.lower() not in text.lower(), f"{name}'s secret shown by {where}"


# --- the API and the CLI show fingerprints only ---------------------------------------------


async def test_no_live_token_or_return_path_appears_anywhere_in_the_api(
    node: Node, sink: SmtpSink
) -> None:
    secrets = await _secrets_after_a_reply(node, sink)
    [inbound] = await _json(node.http_port, "/api/messages")
    for path in (
        "/api/outbox",
        "/api/messages",
        "/api/messages?status=delivered&limit=5",
        f"/api/messages/{inbound['id']}",
        f"/api/messages/{inbound['id']}/raw",
        f"/api/messages/{inbound['id']}/timeline",
        f"/api/messages?q={secrets['alice']}",
        "/api/conversations/issue-1",
    ):
        code, _, body = await _http(node.http_port, path)
        assert code == 200, (path, body)
        _assert_nothing_live(body, secrets, path)
    # The raw source is the mail as received, with the addresses redacted.
    _, fields, raw = await _http(node.http_port, f"/api/messages/{inbound['id']}/raw")
    assert fields["content-type"].startswith("text/plain") and "Agreed, ship it." in raw
    assert fields["content-security-policy"] == "default-src 'none'; sandbox"
    # What is shown instead: a prefix of the stored hash, enough to find the row.
    alice_fp = hash_token(secrets["alice"])[:6]
    assert inbound["envelope"]["rcpt_tos"] == [f"reply+…{alice_fp}@localhost"]
    assert f"reply+…{alice_fp}@localhost" in inbound["subject"]
    one = await _json(node.http_port, f"/api/messages/{inbound['id']}")
    to_header = [v for k, v in one["parsed"]["headers"] if k.lower() == "to"]
    assert to_header == [f"reply+…{alice_fp}@localhost"]
    [out] = await _json(node.http_port, "/api/outbox")
    bob_fp = hash_token(secrets["bob"])[:6]
    assert out["reply_to"] == f"reply+…{bob_fp}@localhost"
    assert out["reply_token"]["fingerprint"] == bob_fp
    assert out["reply_token"]["expires_at"] and out["reply_token"]["revoked"] is False
    assert out["recipient"] == "bob@example.com"
    assert out["mail_from"].startswith("bounces+…")


async def test_no_live_token_appears_in_any_cli_view(
    tmp_path: Path, node: Node, sink: SmtpSink
) -> None:
    secrets = await _secrets_after_a_reply(node, sink)
    env = _env(tmp_path, MAILBOT_DATABASE_URL=node.settings.database_url)
    eml = tmp_path / "again.eml"
    address = f"reply+{secrets['alice'].upper()}@localhost"
    eml.write_bytes(build_mail("alice@example.com", address, f"Again, from {address}."))
    outputs = {
        " ".join(args): await _mailbot(env, *args)
        for args in (
            ("inbox",),
            ("inbox", "--json"),
            ("outbox",),
            ("outbox", "--json"),
            ("conversation", "show", "issue-1"),
            ("conversation", "show", "issue-1", "--json"),
            ("quarantine", "list", "--json"),
            ("replay", str(eml), "--to", address, "--json"),
        )
    }
    for command, out in outputs.items():
        _assert_nothing_live(out, secrets, f"mailbot {command}")
    replayed = json.loads(outputs[f"replay {eml} --to {address} --json"])
    alice_fp = hash_token(secrets["alice"])[:6]
    assert replayed["envelope"]["rcpt_tos"] == [f"reply+…{alice_fp}@localhost"]
    assert f"Again, from reply+…{alice_fp}@localhost." == replayed["reply_text"]
    await _mailbot(env, "outbox", "--limit", "0", ok=False)


async def test_a_sent_mail_keeps_only_the_fingerprint_of_its_reply_address(
    node: Node, sink: SmtpSink
) -> None:
    secrets = await _secrets_after_a_reply(node, sink)
    sink.data_reply = None
    async with asyncio.timeout(60):
        while (await _outbox_rows(node))[0].status != OutboundStatus.sent:
            await asyncio.sleep(0.05)
    [mail] = sink.received
    assert f"reply+{secrets['bob']}@localhost" in mail.message["Reply-To"]  # it went out live
    async with node.sessions() as session:
        query = select(OutboundMessage).options(undefer(OutboundMessage.raw))
        [row] = list(await session.scalars(query))
        raw = row.raw
    _assert_nothing_live(raw.decode("utf-8", "replace"), secrets, "the stored raw mail")
    _assert_nothing_live(f"{row.reply_to} {row.subject}", secrets, "the stored reply_to")
    fp = hash_token(secrets["bob"])[:6]
    assert row.reply_to == f"reply+…{fp}@localhost"
    assert f"Reply-To: reply+…{fp}@localhost".encode() in raw
    assert row.mail_from == mail.mail_from  # the return path stays: bounces must find it


async def test_a_mail_stored_failed_with_a_live_address_loses_it_when_a_node_starts(
    tmp_path: Path, sink: SmtpSink
) -> None:
    # Rows final before this rule, or stored `failed` from the start (the throttle refused
    # them): the outbox sweeps them at start.
    settings = settings_for(tmp_path, sink)
    token = mint_token()
    async with running(settings, app, smtp=False, work=False, http=False) as node:
        async with node.sessions() as session, session.begin():
            session.add(
                OutboundMessage(
                    status=OutboundStatus.failed,
                    reason="too many mails to bob@example.com this hour",
                    message_id="<old@localhost>",
                    mail_from="bounces+00000000000000000001@localhost",
                    recipient="bob@example.com",
                    reply_to=f"reply+{token}@localhost",
                    subject="Old",
                    raw=f"Reply-To: reply+{token}@localhost\r\n\r\nold\r\n".encode(),
                )
            )
    async with running(settings, app, smtp=False, http=False) as node:
        async with asyncio.timeout(30):
            while (row := (await _outbox_rows(node))[0]).reply_to != (
                f"reply+…{hash_token(token)[:6]}@localhost"
            ):
                await asyncio.sleep(0.05)
        async with node.sessions() as session:
            raw = await session.scalar(select(OutboundMessage.raw))
    assert raw is not None and token not in raw.decode()
    assert row.status == OutboundStatus.failed


# --- redaction itself ---------------------------------------------------------------------


def test_redaction_finds_tokens_in_any_case_and_encoding_and_leaves_other_text_alone() -> None:
    token = mint_token()
    fp = hash_token(token)[:6]
    ours = "<0123456789abcdef0123456789abcdef@localhost>"  # a Message-ID we make: uuid hex
    value = {
        f"key reply+{token}@d": [
            f"REPLY+{token.upper()}@D",
            f"mailto:reply%2B{token}@d",
            f"=?utf-8?q?reply=2B{token}?=",
            f"just {token}.",
            ("bounces+0123456789abcdef0123@d",),
        ],
        "n": 3,
        "id": ours,
    }
    shown = redact(value)
    assert token not in json.dumps(shown).lower()
    assert shown == {
        f"key reply+…{fp}@d": [
            f"reply+…{fp}@D",
            f"mailto:reply+…{fp}@d",
            f"=?utf-8?q?reply+…{fp}?=",
            f"just …{fp}.",
            [f"bounces+…{hashlib.sha256(b'0123456789abcdef0123').hexdigest()[:6]}@d"],
        ],
        "n": 3,
        "id": ours,
    }
    assert fingerprint(token.upper()) == fp
    assert redact(shown) == shown  # a fingerprint is never taken for a token
    assert redact_bytes(f"Reply-To: reply+{token}@d\r\n\xff".encode("latin-1")) == (
        f"Reply-To: reply+…{fp}@d\r\n".encode() + b"\xff"
    )


# --- the HTTP side is closed by default ---------------------------------------------------


async def test_a_node_refuses_to_serve_the_api_beyond_loopback_without_a_token(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="MAILBOT_API_TOKEN"):
        async with running(settings_for(tmp_path, http_host="0.0.0.0"), app):
            pass
    with pytest.raises(ConfigError, match="shorter than"):
        async with running(settings_for(tmp_path, http_host="0.0.0.0", api_token=" "), app):
            pass


async def test_beyond_loopback_a_token_made_by_the_cli_is_enough_and_is_asked_for(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, http_host="0.0.0.0")
    async with database(settings.database_url) as (engine, sessions):
        await upgrade(engine)
        async with sessions() as session, session.begin():
            made = await api_tokens.create(session, "ci")
            old = await api_tokens.create(session, "old")
            await api_tokens.revoke(session, "old")
    async with running(settings, app, smtp=False, work=False) as node:
        port = node.http_port
        assert (await _json(port, "/health"))["status"] == "ok"
        for given in ({}, {"Authorization": f"Bearer {old}"}, {"Authorization": "Bearer x"}):
            code, fields, _ = await _http(port, "/api/messages", headers=given)
            assert (code, fields.get("www-authenticate")) == (401, "Bearer"), given
        code, fields, _ = await _http(port, "/")
        assert (code, fields.get("location")) == (303, "/login")
        assert await _json(port, "/api/messages", headers={"Authorization": f"Bearer {made}"}) == []
    await check_exposure_now(settings)  # `mailbot config check` finds the token too
    async with database(settings.database_url) as (_, sessions):
        async with sessions() as session, session.begin():
            await api_tokens.revoke(session, "ci")
    # No live token left: the node refuses to start, and says how to make one.
    with pytest.raises(ConfigError, match="api-token create"):
        async with running(settings, app, smtp=False, work=False):
            pass
    with pytest.raises(ConfigError, match="api-token create"):
        await check_exposure_now(settings)


async def test_insecure_no_auth_serves_beyond_loopback_and_says_so_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path, http_host="0.0.0.0", insecure_no_auth=True)
    with caplog.at_level(logging.WARNING):
        async with running(settings, app, smtp=False, work=False) as node:
            assert await _json(node.http_port, "/api/outbox") == []
    assert any("INSECURE" in r.getMessage() for r in caplog.records)


async def test_with_a_token_every_route_but_health_needs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path, http_host="0.0.0.0", api_token=API_TOKEN)
    with caplog.at_level(logging.DEBUG):
        async with running(settings, app, smtp=False, work=False) as node:
            port = node.http_port
            assert (await _json(port, "/health"))["status"] == "ok"
            for path in ("/api/outbox", "/api/messages", "/api/messages/1", "/api/nope"):
                for given in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_TOKEN}):
                    code, fields, body = await _http(port, path, headers=given)
                    assert (code, fields.get("www-authenticate")) == (401, "Bearer"), path
                    assert API_TOKEN not in body
            good = {"Authorization": f"Bearer {API_TOKEN}"}
            assert await _json(port, "/api/outbox", headers=good) == []
            assert await _json(port, "/api/messages/1", 404, headers=good) == {
                "error": "no such message"
            }
            assert (
                await _json(port, "/api/outbox", headers={"authorization": f"bearer {API_TOKEN}"})
                == []
            )
    assert API_TOKEN not in caplog.text


async def test_a_foreign_host_header_gets_400_which_stops_dns_rebinding(node: Node) -> None:
    port = node.http_port
    for host in ("evil.example", "evil.example:8025", "127.0.0.1.evil.example"):
        code, fields, body = await _http(port, "/api/outbox", host=host)
        assert code == 400, host
        assert fields["content-type"].startswith("application/json") and json.loads(body)
    for host in ("127.0.0.1", f"127.0.0.1:{port}", "localhost", "LOCALHOST:1", "[::1]:80"):
        assert await _json(port, "/api/outbox", host=host) == []


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/messages?limit=-1", 400),
        ("/api/messages?limit=abc", 400),
        ("/api/messages?limit=0", 400),
        ("/api/messages?limit=1001", 400),
        ("/api/messages?limit=%EF%BC%91", 400),  # a full-width digit one, which int() reads
        ("/api/messages?limit=1_0", 400),
        ("/api/outbox?limit=-1", 400),
        ("/api/messages?status=nope", 400),
        ("/api/messages/99999999999999999999", 404),
        ("/api/messages/2147483648", 404),
        ("/api/messages/" + "9" * 5000, 404),
        ("/api/messages/0", 404),
        ("/api/messages/-1", 404),
        ("/api/messages/abc", 404),
        ("/api/conversations/a%00b", 404),
        ("/api/conversations/" + "k" * 300, 404),
        ("/api/nothing-here", 404),
        ("/nothing-here", 404),
        ("/static/nope.js", 404),
        ("/api/messages?q=" + "x" * 600, 400),
        ("/api/messages?before=abc", 400),
        ("/api/messages/abc/timeline", 404),
        ("/api/messages/abc/raw", 404),
        ("/api/messages/1/html", 404),
    ],
)
async def test_bad_parameters_and_unknown_ids_get_a_json_error_not_a_500(
    node: Node, path: str, status: int
) -> None:
    body = await _json(node.http_port, path, status)
    assert set(body) == {"error"}


async def test_a_huge_id_and_a_negative_limit_on_postgresql_are_404_and_400(
    tmp_path: Path, postgres_url: str
) -> None:
    from mailbot.store.db import database, upgrade

    async with database(postgres_url) as (engine, _):
        await upgrade(engine)
    settings = settings_for(tmp_path, database_url=postgres_url)
    async with running(settings, app, smtp=False, work=False) as node:
        await _json(node.http_port, "/api/messages/99999999999999999999", 404)
        await _json(node.http_port, "/api/messages/2147483647", 404)
        await _json(node.http_port, "/api/messages?limit=-1", 400)
        await _json(node.http_port, "/api/conversations/a%00b", 404)
        assert await _json(node.http_port, "/api/messages?limit=1000") == []


# --- mailbot serve ----------------------------------------------------------------------------


@pytest.fixture
async def serve_env(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    yield _env(
        tmp_path,
        MAILBOT_SMTP_PORT=str(_free_port()),
        MAILBOT_HTTP_PORT=str(_free_port()),
        MAILBOT_HTTP_HOST="0.0.0.0",
    )


async def test_mailbot_serve_beyond_loopback_needs_a_token_or_insecure_no_auth(
    serve_env: dict[str, str],
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *MAILBOT, "serve", env=serve_env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0
    assert b"MAILBOT_API_TOKEN" in err and b"Traceback" not in err
    for flags in (["--insecure-no-auth"], ["--api-token", API_TOKEN]):
        proc = await asyncio.create_subprocess_exec(
            *MAILBOT, "serve", *flags, env=serve_env, stderr=asyncio.subprocess.PIPE
        )
        assert proc.stderr is not None
        seen = b""
        try:
            async with asyncio.timeout(60):
                while b"HTTP listening" not in (line := await proc.stderr.readline()):
                    assert line, seen.decode()
                    seen += line
            port = int(serve_env["MAILBOT_HTTP_PORT"])
            code, _, _ = await _http(port, "/api/outbox")
            assert code == (200 if flags == ["--insecure-no-auth"] else 401)
        finally:
            proc.send_signal(signal.SIGINT)
            rest = await asyncio.wait_for(proc.stderr.read(), 30)
            assert await proc.wait() == 0
        assert (b"INSECURE" in seen) == (flags == ["--insecure-no-auth"])
        assert API_TOKEN.encode() not in seen + rest
