"""The providers' inbound webhooks (mailbot/ingress/): a signed post of a real reply is
stored and becomes a comment on a running node; a forged, replayed, misaddressed or oversized
one stores nothing. Bodies are built as each provider sends them: multipart/form-data for
Mailgun and SendGrid, JSON for Postmark; HTTP over a real socket."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select, text

from mailbot.bots.default import app
from mailbot.errors import ConfigError
from mailbot.logs import Redacting
from mailbot.serve import Node, running
from mailbot.store import spool
from mailbot.store.models import InboundMessage
from mailbot.testing import InboundStatus, build_mail, make_thread, settings_for, wait_for_status
from tests.test_web_api import _request

MAILGUN_KEY = "key-" + "m" * 28
POSTMARK_PASSWORD = "pm-" + "p" * 21
API_TOKEN = "api-" + "t" * 24
LIMIT = 100_000
SENDGRID = ec.generate_private_key(ec.SECP256R1())  # the policy's key pair, made here
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    settings = settings_for(
        tmp_path,
        mailgun_signing_key=MAILGUN_KEY,
        postmark_password=POSTMARK_PASSWORD,
        sendgrid_public_key=SENDGRID_PUBLIC,
        api_token=API_TOKEN,  # the API is closed; the ingress routes prove themselves
        max_message_size=LIMIT,
    )
    async with running(settings, app) as started:
        yield started


def _form(fields: dict[str, bytes]) -> tuple[str, bytes]:
    """multipart/form-data, as Mailgun and SendGrid post it."""
    boundary = "xYzZY" + secrets.token_hex(8)
    parts = [
        b"--" + boundary.encode() + b"\r\n"
        b'Content-Disposition: form-data; name="' + name.encode() + b'"\r\n\r\n' + value + b"\r\n"
        for name, value in fields.items()
    ]
    return f"multipart/form-data; boundary={boundary}", b"".join(parts) + b"--" + (
        boundary.encode() + b"--\r\n"
    )


def _mailgun(
    raw: bytes, recipient: str, sender: str, *, key: str = MAILGUN_KEY, **over: Any
) -> tuple[str, bytes]:
    timestamp = str(over.pop("timestamp", int(time.time())))
    token = over.pop("token", secrets.token_hex(25))  # 50 characters, as Mailgun's
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    fields = {
        "recipient": recipient.encode(),
        "sender": sender.encode(),
        "from": f"Alice <{sender}>".encode(),
        "subject": b"Re: test",
        "body-mime": raw,
        "timestamp": timestamp.encode(),
        "token": token.encode(),
        "signature": signature.encode(),
    }
    fields.update(over)
    return _form(fields)


def _postmark(raw: bytes, recipient: str, sender: str, *, raw_email: bool = True) -> bytes:
    """A Postmark inbound post, with "Include raw email content" on (or off)."""
    post: dict[str, Any] = {
        "FromName": "Alice",
        "MessageStream": "inbound",
        "From": sender,
        "FromFull": {"Email": sender, "Name": "Alice", "MailboxHash": ""},
        "To": recipient,
        "ToFull": [{"Email": recipient, "Name": "", "MailboxHash": ""}],
        "Cc": "",
        "CcFull": [],
        "Bcc": "",
        "BccFull": [],
        "OriginalRecipient": recipient,
        "Subject": "Re: test",
        "MessageID": "22c74902-a0c1-4511-804f-341342852c90",
        "ReplyTo": "",
        "MailboxHash": "",
        "Date": "Thu, 5 Apr 2026 16:59:01 +0200",
        "TextBody": "parsed text",
        "HtmlBody": "",
        "StrippedTextReply": "parsed text",
        "Tag": "",
        "Headers": [
            {"Name": "Return-Path", "Value": f"<{sender}>"},
            {"Name": "X-Spam-Status", "Value": "No"},
        ],
        "Attachments": [],
    }
    if raw_email:
        post["RawEmail"] = raw.decode("utf-8")
    return json.dumps(post).encode()


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _sendgrid(
    raw: bytes, recipient: str, sender: str, *, key: ec.EllipticCurvePrivateKey = SENDGRID
) -> tuple[dict[str, str], bytes]:
    """An Inbound Parse post with "POST the raw, full MIME message" on, signed as a security
    policy signs it: ECDSA over the timestamp header followed by the body."""
    content_type, body = _form(
        {
            "dkim": b"none",
            "email": raw,
            "to": recipient.encode(),
            "from": f"Alice <{sender}>".encode(),
            "sender_ip": b"192.0.2.7",
            "spam_report": b"",
            "envelope": json.dumps({"to": [recipient], "from": sender}).encode(),
            "subject": b"Re: test",
            "spam_score": b"0.1",
            "charsets": b'{"to":"UTF-8","from":"UTF-8","subject":"UTF-8"}',
            "SPF": b"pass",
        }
    )
    timestamp = str(int(time.time()))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "Content-Type": content_type,
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }
    return headers, body


async def _post(node: Node, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    code, _, said = await _request(node.http_port, "POST", path, raw_body=body, headers=headers)
    return code, said


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """What `serve` would have written (its formatter redacts reply tokens)."""
    return "\n".join(Redacting().format(record) for record in caplog.records)


async def _stored(node: Node) -> int:
    async with node.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(InboundMessage)) or 0)


async def _comments(node: Node, key: str) -> list[str]:
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    code, _, convo = await _request(node.http_port, "GET", f"/api/conversations/{key}", None, auth)
    assert code == 200, convo
    return [c["body"] for c in convo["comments"]]


async def _becomes_a_comment(node: Node, said: Any, key: str, text: str) -> InboundMessage:
    row = await wait_for_status(node.sessions, int(said["stored"]))
    assert row.status is InboundStatus.delivered, row.reason
    assert text in await _comments(node, key)
    return row


async def test_a_signed_mailgun_post_of_a_reply_becomes_a_comment_and_its_replay_is_refused(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # what `serve` logs by default
    thread = await make_thread(node, people=("alice", "bob"))
    address = thread.addresses["alice"]
    raw = build_mail("alice@example.com", address, "Fixed by restarting the spooler.")
    raw = raw.replace(b"Fixed", b"Fixed \xe9").replace(b"utf-8", b"iso-8859-1")  # 8-bit, kept
    content_type, body = _mailgun(raw, address, "alice@example.com", token="t" * 50)
    path = "/ingress/mailgun/messages.mime"
    code, said = await _post(node, path, body, {"Content-Type": content_type})
    assert code == 200, said
    row = await _becomes_a_comment(node, said, thread.key, "Fixed é by restarting the spooler.")
    assert row.mail_from == "alice@example.com" and row.rcpt_tos == [address]
    assert await spool.load_raw(node.sessions, row.id) == raw  # the bytes as Mailgun had them

    code, again = await _post(node, path, body, {"Content-Type": content_type})
    assert code == 403 and "replay" in again["error"]  # the same token again
    stale, body = _mailgun(raw, address, "alice@example.com", timestamp=int(time.time()) - 3600)
    code, _ = await _post(node, path, body, {"Content-Type": stale})
    assert code == 403  # a real signature, an hour old
    assert await _stored(node) == 1
    token = address.split("+")[1].split("@")[0]
    for secret in (token, "t" * 50, MAILGUN_KEY):  # the reply token, Mailgun's, the key
        assert secret not in _logged(caplog)


async def test_a_forged_mailgun_post_stores_nothing(node: Node) -> None:
    thread = await make_thread(node)
    address = thread.addresses["alice"]
    raw = build_mail("alice@example.com", address, "Let me in.")
    path = "/ingress/mailgun/messages.mime"
    forged, body = _mailgun(raw, address, "alice@example.com", key="key-guessed")
    assert (await _post(node, path, body, {"Content-Type": forged}))[0] == 401
    unsigned, body = _form({"recipient": address.encode(), "body-mime": raw})
    assert (await _post(node, path, body, {"Content-Type": unsigned}))[0] == 401
    # A real signature over another timestamp: what is signed was changed.
    content_type, body = _mailgun(raw, address, "alice@example.com", timestamp=1)
    body = body.replace(b"\r\n\r\n1\r\n", b"\r\n\r\n" + str(int(time.time())).encode() + b"\r\n")
    assert (await _post(node, path, body, {"Content-Type": content_type}))[0] == 401
    assert await _stored(node) == 0


async def test_a_postmark_post_with_its_credentials_becomes_a_comment(node: Node) -> None:
    thread = await make_thread(node, people=("alice", "bob"))
    address = thread.addresses["bob"]
    raw = build_mail("bob@example.com", address, "Printer is back online.")
    code, said = await _post(
        node,
        "/ingress/postmark",
        _postmark(raw, address, "bob@example.com"),
        {"Content-Type": "application/json", **_basic("mailbot", POSTMARK_PASSWORD)},
    )
    assert code == 200, said
    row = await _becomes_a_comment(node, said, thread.key, "Printer is back online.")
    assert row.mail_from == "bob@example.com"  # the Return-Path Postmark recorded


async def test_a_postmark_post_without_credentials_or_raw_email_stores_nothing(
    node: Node,
) -> None:
    thread = await make_thread(node)
    address = thread.addresses["alice"]
    body = _postmark(build_mail("alice@example.com", address, "hi"), address, "alice@example.com")
    json_type = {"Content-Type": "application/json"}
    for wrong in (
        {},
        _basic("mailbot", "guessed-password-123"),
        _basic("admin", POSTMARK_PASSWORD),
    ):
        code, said = await _post(node, "/ingress/postmark", body, {**json_type, **wrong})
        assert code == 401, said
    parsed_only = _postmark(b"", address, "alice@example.com", raw_email=False)
    auth = {**json_type, **_basic("mailbot", POSTMARK_PASSWORD)}
    code, said = await _post(node, "/ingress/postmark", parsed_only, auth)
    assert code == 422 and "Include raw email content" in said["error"]
    assert await _stored(node) == 0


async def test_a_signed_sendgrid_post_becomes_a_comment(node: Node) -> None:
    thread = await make_thread(node, people=("alice", "carol"))
    address = thread.addresses["carol"]
    raw = build_mail("carol@example.com", address, "Toner ordered.")
    headers, body = _sendgrid(raw, address, "carol@example.com")
    code, said = await _post(node, "/ingress/sendgrid", body, headers)
    assert code == 200, said
    row = await _becomes_a_comment(node, said, thread.key, "Toner ordered.")
    assert (row.client_ip, row.mail_from) == ("192.0.2.7", "carol@example.com")
    code, _ = await _post(node, "/ingress/sendgrid", body, headers)
    assert code == 403  # the same signed post again
    assert await _stored(node) == 1


async def test_a_forged_sendgrid_post_stores_nothing(node: Node) -> None:
    thread = await make_thread(node)
    address = thread.addresses["alice"]
    raw = build_mail("alice@example.com", address, "Let me in.")
    other = ec.generate_private_key(ec.SECP256R1())
    headers, body = _sendgrid(raw, address, "alice@example.com", key=other)
    assert (await _post(node, "/ingress/sendgrid", body, headers))[0] == 401
    headers, body = _sendgrid(raw, address, "alice@example.com")
    altered = body.replace(b"Let me in.", b"Let us in.")  # signed, then changed on the way
    assert (await _post(node, "/ingress/sendgrid", altered, headers))[0] == 401
    unsigned = {"Content-Type": headers["Content-Type"]}
    assert (await _post(node, "/ingress/sendgrid", body, unsigned))[0] == 401
    assert await _stored(node) == 0


async def test_unknown_foreign_and_oversized_mail_is_refused_by_every_provider(
    node: Node,
) -> None:
    thread = await make_thread(node)
    live = thread.addresses["alice"]
    unknown = "reply+" + "a" * 32 + "@" + node.settings.domain
    huge = build_mail("alice@example.com", live, "x" * (LIMIT + 1000))
    foreign = "someone@example.net"
    cases = [
        (unknown, build_mail("alice@example.com", unknown, "hi"), "unknown"),
        (foreign, build_mail("alice@example.com", foreign, "hi"), "relay"),  # never a relay
        (live, huge, "over"),
    ]
    for recipient, raw, why in cases:
        content_type, body = _mailgun(raw, recipient, "alice@example.com")
        code, said = await _post(
            node, "/ingress/mailgun/messages.mime", body, {"Content-Type": content_type}
        )
        assert code == 406 and why in said["error"].lower(), said  # Mailgun: do not retry
        code, said = await _post(
            node,
            "/ingress/postmark",
            _postmark(raw, recipient, "alice@example.com"),
            {"Content-Type": "application/json", **_basic("mailbot", POSTMARK_PASSWORD)},
        )
        assert code == 403 and why in said["error"].lower(), said  # Postmark: stop retrying
        headers, body = _sendgrid(raw, recipient, "alice@example.com")
        code, said = await _post(node, "/ingress/sendgrid", body, headers)
        assert code == 422 and why in said["error"].lower(), said
        assert "a" * 32 not in json.dumps(said)  # a token is never echoed
    assert await _stored(node) == 0


async def test_the_routes_are_not_there_until_their_secret_is_set(tmp_path: Path) -> None:
    async with running(settings_for(tmp_path), app, smtp=False, work=False) as node:
        for path in ("/ingress/mailgun/messages.mime", "/ingress/postmark", "/ingress/sendgrid"):
            assert (await _post(node, path, b"{}", {"Content-Type": "application/json"}))[0] == 404


async def test_a_credential_that_cannot_be_used_stops_the_node_at_start(tmp_path: Path) -> None:
    for bad in ({"postmark_password": "short"}, {"sendgrid_public_key": "bm90IGEga2V5"}):
        with pytest.raises(ConfigError):
            async with running(settings_for(tmp_path, **bad), app, smtp=False, work=False):
                pass


async def test_a_storage_failure_is_503_and_the_same_post_is_taken_when_retried(
    node: Node,
) -> None:
    thread = await make_thread(node)
    address = thread.addresses["alice"]
    raw = build_mail("alice@example.com", address, "Sent while the disk was full.")
    content_type, body = _mailgun(raw, address, "alice@example.com")
    path = "/ingress/mailgun/messages.mime"
    async with node.sessions() as session, session.begin():
        # A real failure inside the database at commit time (as a full disk would give).
        await session.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON inbound_messages "
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        )
    code, said = await _post(node, path, body, {"Content-Type": content_type})
    assert code == 503 and said["error"].startswith("451"), said  # Mailgun tries again
    async with node.sessions() as session, session.begin():
        await session.execute(text("DROP TRIGGER refuse"))
    code, said = await _post(node, path, body, {"Content-Type": content_type})
    assert code == 200, said  # the same token: not a replay, it was never taken
    await _becomes_a_comment(node, said, thread.key, "Sent while the disk was full.")


async def test_a_url_encoded_mailgun_post_keeps_the_message_bytes(node: Node) -> None:
    thread = await make_thread(node)
    address = thread.addresses["alice"]
    raw = build_mail("alice@example.com", address, "Plain text & 100% = done?")
    content_type, multipart = _mailgun(raw, address, "alice@example.com")
    fields = dict(urllib.parse.parse_qsl(_urlencoded_from(content_type, multipart)))
    body = urllib.parse.urlencode(fields).encode()
    code, said = await _post(
        node,
        "/ingress/mailgun/messages.mime",
        body,
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert code == 200, said
    row = await _becomes_a_comment(node, said, thread.key, "Plain text & 100% = done?")
    assert await spool.load_raw(node.sessions, row.id) == raw


def _urlencoded_from(content_type: str, multipart: bytes) -> str:
    """The same fields as a URL-encoded body (what Mailgun sends for mail without files)."""
    boundary = content_type.split("boundary=")[1].encode()
    pairs = []
    for part in multipart.split(b"--" + boundary)[1:-1]:
        head, _, value = part.partition(b"\r\n\r\n")
        name = head.split(b'name="')[1].split(b'"')[0].decode()
        pairs.append((name, value[:-2].decode()))
    return urllib.parse.urlencode(pairs)


async def test_hostile_posts_get_a_defined_answer_and_store_nothing(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    mailgun, postmark = "/ingress/mailgun/messages.mime", "/ingress/postmark"
    auth = {"Content-Type": "application/json", **_basic("mailbot", POSTMARK_PASSWORD)}
    broken = {"Content-Type": "multipart/form-data; boundary=zz"}
    signed = {"X-Twilio-Email-Event-Webhook-Signature": "!!"}
    signed["X-Twilio-Email-Event-Webhook-Timestamp"] = "1"
    cases = [
        (mailgun, b"--zz\r\nContent-Disposition: form-data\r\n\r\nno end", broken),
        (mailgun, b"\x00\xff" * 500, {"Content-Type": "text/plain"}),
        (mailgun, b"", {}),
        (postmark, b"[1, 2, 3]", auth),
        (postmark, b"[" * 100_000, auth),
        (postmark, b"\xff\xfe{", auth),
        (postmark, json.dumps({"RawEmail": "x", "OriginalRecipient": "a\r\nb@x"}).encode(), auth),
        ("/ingress/sendgrid", b"x", signed),
    ]  # fmt: skip
    for path, body, headers in cases:
        code, said = await _post(node, path, body, headers)
        assert 400 <= code < 500 and "error" in said, (path, body[:40], code, said)
    # A declared length over the bound is refused before anything is read.
    reader, writer = await asyncio.open_connection("127.0.0.1", node.http_port)
    writer.write(
        f"POST {postmark} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {10**10}\r\n"
        f"Authorization: {auth['Authorization']}\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    assert (await reader.read()).startswith(b"HTTP/1.1 403")
    writer.close()
    await writer.wait_closed()
    assert await _stored(node) == 0
    for secret in (MAILGUN_KEY, POSTMARK_PASSWORD):
        assert secret not in _logged(caplog)
