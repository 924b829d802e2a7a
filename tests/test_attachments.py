"""Attachments (issue #10): put in the blob store by the analyser, one row each, served by the
API as downloads streamed from the store."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from sqlalchemy import select

from mailbot.bots.default import app
from mailbot.pipeline.analyse import Analyser
from mailbot.serve import Node, running
from mailbot.spam import quarantine
from mailbot.store import attachments, blobs, retention
from mailbot.store.attachments import StoredAttachment, clean_filename
from mailbot.store.models import InboundAttachment, InboundMessage, InboundStatus, utcnow
from mailbot.testing import SmtpSink, make_thread, reply, settings_for

PDF = b"%PDF-1.7\n" + os.urandom(300_000)
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(2_000)
TOKEN = "abcdefghijklmnopqrstuvwxyz234567"  # a live reply token's shape
API_TOKEN = "attachments-test-token-5d1c"


def mail_with_attachments(sender: str = "ann@example.com", to: str = "b@example.com") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, "Re: files"
    msg["Message-ID"] = make_msgid(domain="client.example")
    msg.set_content("The files you asked for.")
    msg.add_alternative("<p>The files you asked for.</p>", subtype="html")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="report.pdf")
    msg.add_attachment(PNG, maintype="image", subtype="png", filename="../../etc/\u202egnp.exe")
    msg.add_attachment("notes\r\n", subtype="plain", filename="notes.txt")
    inner = EmailMessage()
    inner["From"], inner["Subject"] = "carol@example.com", "the original"
    inner.set_content("Forwarded text.")
    msg.add_attachment(inner)  # message/rfc822: one attachment, whole
    return msg.as_bytes()


@pytest.mark.parametrize("workers", [0, 1])
async def test_the_analyser_puts_each_attachment_in_the_store_in_parse_order(
    tmp_path: Path, workers: int
) -> None:
    root = tmp_path / "blobs"
    async with Analyser(workers, blob_root=root) as analyse:
        analysis = await analyse(mail_with_attachments())
    listed = analysis.parsed.attachments
    assert [a.position for a in analysis.attachments] == [0, 1, 2, 3]
    assert [a.content_type for a in analysis.attachments] == [
        "application/pdf",
        "image/png",
        "text/plain",
        "message/rfc822",
    ]
    assert [a.content_type for a in listed] == [a.content_type for a in analysis.attachments]
    assert analysis.reply == "The files you asked for."  # the text is not an attachment
    store = blobs.DirectoryStore(root)
    by_type = {a.content_type: a for a in analysis.attachments}
    for content_type, data in [("application/pdf", PDF), ("image/png", PNG)]:
        found = by_type[content_type]
        assert found.key == found.sha256 == hashlib.sha256(data).hexdigest()
        assert found.size == len(data) and await store.get(found.key) == data
    assert by_type["application/pdf"].filename == "report.pdf"
    assert by_type["image/png"].filename == "_.._etc__gnp.exe"
    forwarded = await store.get(by_type["message/rfc822"].key)
    assert b"Subject: the original" in forwarded and b"Forwarded text." in forwarded


async def test_blank_lines_before_the_header_block_do_not_lose_the_attachments_bytes(
    tmp_path: Path,
) -> None:
    # parse() skips them (LeadingBlankLines); the bytes must be read from the same start.
    root = tmp_path / "blobs"
    async with Analyser(0, blob_root=root) as analyse:
        analysis = await analyse(b"\r\n\r\n" + mail_with_attachments())
    assert "LeadingBlankLines" in analysis.parsed.defects
    assert [a.content_type for a in analysis.attachments][:2] == ["application/pdf", "image/png"]
    pdf = analysis.attachments[0]
    assert await blobs.DirectoryStore(root).get(pdf.key) == PDF


async def test_without_a_blob_store_the_analyser_keeps_no_attachment(tmp_path: Path) -> None:
    async with Analyser(0) as analyse:
        analysis = await analyse(mail_with_attachments())
    assert len(analysis.parsed.attachments) == 4 and analysis.attachments == ()


@pytest.mark.parametrize(
    ("given", "cleaned"),
    [
        ("report.pdf", "report.pdf"),
        ("a\r\nContent-Type: text/html\r\n.pdf", "a__Content-Type: text_html__.pdf"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("..\\..\\boot.ini", "_.._boot.ini"),
        ("nul\x00byte.txt", "nul_byte.txt"),
        ("invoice\u202efdp.exe", "invoice_fdp.exe"),
        ("  .hidden  ", "hidden"),
        ("...", None),
        ("", None),
        (None, None),
        ("x" * 500 + ".docx", "x" * 195 + ".docx"),
    ],
)
def test_a_filename_is_one_safe_line_without_a_path(given: str | None, cleaned: str | None) -> None:
    assert clean_filename(given) == cleaned


async def _message_with(node: Node, stored: list[StoredAttachment]) -> int:
    async with node.sessions() as session, session.begin():
        row = InboundMessage(status=InboundStatus.delivered, raw=b"x", raw_sha256="", parsed={})
        session.add(row)
        await session.flush()
        await attachments.record(session, row.id, stored)
    return row.id


async def _stored(
    node: Node, position: int, data: bytes, filename: str | None, ctype: str
) -> StoredAttachment:
    key = await blobs.for_settings(node.settings).put(data)
    return StoredAttachment(position, filename, ctype, len(data), key, key)


async def test_record_writes_a_row_each_and_replaces_them_when_the_message_runs_again(
    tmp_path: Path, sink: SmtpSink
) -> None:
    async with running(settings_for(tmp_path, sink), app, smtp=False, http=False) as node:
        first = [await _stored(node, 0, b"one", "a.txt", "text/plain")]
        inbound_id = await _message_with(node, first)
        again = [
            await _stored(node, 0, b"one", "a.txt", "text/plain"),
            await _stored(node, 1, PDF, "b.pdf", "application/pdf"),
        ]
        async with node.sessions() as session, session.begin():
            await attachments.record(session, inbound_id, again)
        async with node.sessions() as session:
            rows = await attachments.listed(session, inbound_id)
    assert [(r.position, r.filename, r.size) for r in rows] == [
        (0, "a.txt", 3),
        (1, "b.pdf", len(PDF)),
    ]


async def test_deleting_a_quarantined_message_deletes_its_rows_and_frees_its_blobs(
    tmp_path: Path, sink: SmtpSink
) -> None:
    async with running(settings_for(tmp_path, sink), app, smtp=False, http=False) as node:
        stored = await _stored(node, 0, b"spam attachment", "x.zip", "application/zip")
        inbound_id = await _message_with(node, [stored])
        async with node.sessions() as session, session.begin():
            row = await session.get(InboundMessage, inbound_id)
            assert row is not None
            row.status = InboundStatus.quarantined
        await quarantine.delete(node.sessions, inbound_id)
        async with node.sessions() as session:
            assert await attachments.listed(session, inbound_id) == []
        store = blobs.for_settings(node.settings)
        assert await retention.collect_garbage(node.sessions, store, timedelta(0)) == 1
        assert not store.path(stored.key).exists()


# --- the API, over a real socket -----------------------------------------------------------


async def _get(
    port: int, path: str, token: str | None = API_TOKEN
) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.0", "Host: 127.0.0.1"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    status, *fields = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in fields:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status.split()[1]), headers, body


@pytest.fixture
async def api_node(tmp_path: Path, sink: SmtpSink) -> AsyncIterator[Node]:
    settings = settings_for(tmp_path, sink, api_token=API_TOKEN)
    async with running(settings, app, smtp=False, work=False) as node:
        yield node


async def test_the_api_lists_attachments_and_streams_each_byte_for_byte(api_node: Node) -> None:
    big = os.urandom(3 * 1024 * 1024)  # many chunks
    inbound_id = await _message_with(
        api_node,
        [
            await _stored(api_node, 0, big, "report \u00e9t\u00e9.pdf", "application/pdf"),
            await _stored(api_node, 1, PNG, "pic.png", "image/png"),
        ],
    )
    port = api_node.http_port
    import json

    status, _, body = await _get(port, f"/api/inbound/{inbound_id}/attachments")
    assert status == 200
    listed = json.loads(body)
    assert [(a["n"], a["filename"], a["size"]) for a in listed] == [
        (0, "report \u00e9t\u00e9.pdf", len(big)),
        (1, "pic.png", len(PNG)),
    ]
    assert listed[0]["url"] == f"/api/inbound/{inbound_id}/attachments/0"
    status, headers, body = await _get(port, listed[0]["url"])
    assert status == 200 and body == big
    assert headers["content-type"] == "application/pdf"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-disposition"] == (
        "attachment; filename=\"report _t_.pdf\"; filename*=UTF-8''report%20%C3%A9t%C3%A9.pdf"
    )
    status, headers, body = await _get(port, listed[1]["url"])
    assert (status, headers["content-type"], body) == (200, "image/png", PNG)
    # The same guard as every other route: no token, no bytes.
    status, _, body = await _get(port, listed[0]["url"], token=None)
    assert status == 401 and big[:100] not in body


async def test_an_attachment_that_could_run_in_a_browser_is_served_as_opaque_bytes(
    api_node: Node,
) -> None:
    page = b"<html><script>alert(document.cookie)</script></html>"
    hostile = 'x"; filename=evil.html\r\nSet-Cookie: a=b'
    inbound_id = await _message_with(
        api_node,
        [
            await _stored(api_node, 0, page, "page.html", "text/html"),
            await _stored(api_node, 1, b"<svg onload=alert(1)/>", hostile, "image/svg+xml"),
        ],
    )
    status, headers, body = await _get(
        api_node.http_port, f"/api/inbound/{inbound_id}/attachments/0"
    )
    assert status == 200 and body == page
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"].startswith('attachment; filename="page.html"')
    assert headers["content-security-policy"] == "default-src 'none'; sandbox"
    status, headers, _ = await _get(api_node.http_port, f"/api/inbound/{inbound_id}/attachments/1")
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    assert "set-cookie" not in headers
    assert headers["content-disposition"] == (
        'attachment; filename="x__ filename_evil.html__Set-Cookie_ a_b"; '
        "filename*=UTF-8''x%22%3B%20filename%3Devil.html%0D%0ASet-Cookie%3A%20a%3Db"
    )


async def test_a_text_attachment_is_served_with_its_reply_tokens_redacted(api_node: Node) -> None:
    # A forwarded notification carries someone's reply address; over many chunks.
    text = ("filler line\n" * 30_000 + f"reply to reply+{TOKEN}@localhost\n") * 3
    inbound_id = await _message_with(
        api_node, [await _stored(api_node, 0, text.encode(), "fwd.txt", "text/plain")]
    )
    status, headers, body = await _get(
        api_node.http_port, f"/api/inbound/{inbound_id}/attachments/0"
    )
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert TOKEN.encode() not in body and body.count(b"reply+\xe2\x80\xa6") == 3
    assert body.count(b"filler line\n") == 90_000


async def test_a_reply_address_in_a_filename_is_not_in_the_download_headers(
    api_node: Node,
) -> None:
    name = f"reply+{TOKEN}@localhost.eml"  # a notification saved as a file, then attached
    inbound_id = await _message_with(
        api_node, [await _stored(api_node, 0, b"x", name, "application/octet-stream")]
    )
    status, headers, _ = await _get(api_node.http_port, f"/api/inbound/{inbound_id}/attachments/0")
    assert status == 200
    assert TOKEN not in headers["content-disposition"]
    assert headers["content-disposition"].startswith('attachment; filename="reply+')


async def test_unknown_removed_or_missing_attachments_get_a_json_error(api_node: Node) -> None:
    inbound_id = await _message_with(
        api_node, [await _stored(api_node, 0, b"kept", "a.txt", "text/plain")]
    )
    port = api_node.http_port
    for path in [
        "/api/inbound/999999/attachments",
        "/api/inbound/x/attachments",
        f"/api/inbound/{inbound_id}/attachments/1",
        f"/api/inbound/{inbound_id}/attachments/-1",
        f"/api/inbound/{inbound_id}/attachments/99999999999",
    ]:
        status, headers, body = await _get(port, path)
        assert status == 404 and headers["content-type"] == "application/json", path
    async with api_node.sessions() as session, session.begin():
        row = await session.scalar(
            select(InboundAttachment).where(InboundAttachment.inbound_id == inbound_id)
        )
        assert row is not None
        row.blob_key = None
        message = await session.get(InboundMessage, inbound_id)
        assert message is not None
        message.purged_at = utcnow()
    status, _, body = await _get(port, f"/api/inbound/{inbound_id}/attachments/0")
    assert status == 410 and b"removed by retention" in body
    status, _, body = await _get(port, f"/api/messages/{inbound_id}")
    assert status == 200 and b"raw removed by retention" in body


async def test_a_reply_with_an_attachment_can_be_downloaded_once_delivered(
    tmp_path: Path, sink: SmtpSink
) -> None:
    async with running(settings_for(tmp_path, sink), app) as node:
        thread = await make_thread(node, "files-1", ("ann", "bob"))
        address = thread.addresses["ann"]
        row = await reply(node, "ann@example.com", address, mail_with_attachments(to=address))
        assert row.status == InboundStatus.delivered, row.reason
        status, _, body = await _get(node.http_port, f"/api/inbound/{row.id}/attachments", None)
        assert status == 200 and b"report.pdf" in body
        status, _, body = await _get(node.http_port, f"/api/inbound/{row.id}/attachments/0", None)
        assert status == 200 and body == PDF


async def test_an_attached_message_sent_as_opaque_bytes_has_its_addresses_redacted(
    api_node: Node,
) -> None:
    # A forwarded notification attached as application/octet-stream: the bytes are served as
    # they are, but a written-out reply address or return path is not.
    eml = (
        f"Reply-To: REPLY+{TOKEN}@localhost\r\nReturn-Path: <bounces+0123456789abcdef0123@x>\r\n"
        f"\r\n{'x' * 200_000} and a word of 32 letters: abcdefghijklmnopqrstuvwxyzabcdef\r\n"
    ).encode()
    inbound_id = await _message_with(
        api_node, [await _stored(api_node, 0, eml, "fwd.eml", "application/octet-stream")]
    )
    status, headers, body = await _get(
        api_node.http_port, f"/api/inbound/{inbound_id}/attachments/0"
    )
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    assert TOKEN.encode() not in body.lower() and b"0123456789abcdef0123" not in body
    assert body.count(b"\xe2\x80\xa6") == 2  # two marks
    assert b"abcdefghijklmnopqrstuvwxyzabcdef" in body  # a bare word in a file is left alone
    assert body.count(b"x" * 1000) == 200


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-16-le"])
async def test_a_utf_16_text_attachment_is_redacted_in_its_own_encoding(
    api_node: Node, codec: str
) -> None:
    # Notepad and Outlook on Windows save text as UTF-16: reply+ is then r\0e\0p\0...
    text = ("Grüße, line\r\n" * 20_000 + f"reply to reply+{TOKEN}@localhost\r\n") * 2
    inbound_id = await _message_with(
        api_node, [await _stored(api_node, 0, text.encode(codec), "notes.txt", "text/plain")]
    )
    status, _headers, body = await _get(
        api_node.http_port, f"/api/inbound/{inbound_id}/attachments/0"
    )
    assert status == 200
    shown = body.decode(codec)
    assert TOKEN not in shown and shown.count("reply+…") == 2
    assert shown.count("Grüße, line\r\n") == 40_000
