"""Malformed mail: every case ends in a defined SMTP code or a stored status with a reason,
and the server keeps serving."""

from __future__ import annotations

import base64
import random
from pathlib import Path

from mailbot.bots.default import app
from mailbot.serve import Node, running
from mailbot.store.models import InboundStatus
from mailbot.testing import (
    SmtpSink,
    build_mail,
    make_thread,
    reply,
    settings_for,
)


async def _still_serving(node: Node, address: str) -> None:
    row = await reply(node, "alice@example.com", address, "Still here.")
    assert row.status == InboundStatus.delivered


async def test_a_body_of_random_bytes_is_rejected_with_a_reason(node: Node) -> None:
    thread = await make_thread(node)
    noise = bytes(random.Random(7).getrandbits(8) for _ in range(20_000))
    row = await reply(node, "alice@example.com", thread.addresses["alice"], noise)
    assert row.status == InboundStatus.rejected
    assert row.reason and "From" in row.reason
    await _still_serving(node, thread.addresses["alice"])


async def test_a_broken_mime_boundary_is_repaired_and_the_reply_kept(node: Node) -> None:
    thread = await make_thread(node)
    raw = (
        b"From: alice@example.com\r\nSubject: Re: x\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative;\r\n boundary="declared"\r\n\r\n'
        b"--actual\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nRebooting fixed it.\r\n"
        b"--actual\r\nContent-Type: text/html\r\n\r\n<p>Rebooting fixed it.</p>\r\n--actual--\r\n"
    )
    row = await reply(node, "alice@example.com", thread.addresses["alice"], raw)
    assert row.status == InboundStatus.delivered
    assert row.reply_text == "Rebooting fixed it."
    assert row.parsed is not None and "BoundaryRepaired" in row.parsed["defects"]


async def test_a_multipart_with_no_boundary_at_all_is_read_as_its_one_text_part(
    node: Node,
) -> None:
    thread = await make_thread(node)
    for declared in (b'; boundary="nowhere"', b""):
        raw = (
            b"From: alice@example.com\r\nSubject: Re: x\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed" + declared + b"\r\n\r\nRebooting fixed it.\r\n"
        )
        row = await reply(node, "alice@example.com", thread.addresses["alice"], raw)
        assert row.status == InboundStatus.delivered, row.reason
        assert row.reply_text == "Rebooting fixed it."
        assert row.parsed is not None and "MultipartReadAsText" in row.parsed["defects"]


async def test_blank_lines_before_the_header_block_are_skipped(node: Node) -> None:
    thread = await make_thread(node)
    raw = b"\r\n\r\nFrom: alice@example.com\r\nSubject: Re: x\r\n\r\nRebooting fixed it.\r\n"
    row = await reply(node, "alice@example.com", thread.addresses["alice"], raw)
    assert row.status == InboundStatus.delivered, row.reason
    assert row.reply_text == "Rebooting fixed it."
    assert row.parsed is not None and "LeadingBlankLines" in row.parsed["defects"]


async def test_non_utf8_and_mislabelled_charsets_are_decoded(node: Node) -> None:
    thread = await make_thread(node)
    cases = {
        b"iso-8859-1": ("Grüße aus Köln".encode("latin-1"), "Grüße aus Köln"),
        b"iso-2022-jp": ("了解しました".encode("iso-2022-jp"), "了解しました"),
        b"x-unknown-charset": ("Ça marche".encode(), "Ça marche"),  # unknown name, UTF-8 bytes
        b"utf-8": ("Ça marche".encode("cp1252"), "Ça marche"),  # labelled UTF-8, really cp1252
    }
    for charset, (body, expected) in cases.items():
        raw = (
            b"From: alice@example.com\r\nSubject: Re: x\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=" + charset + b"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(body)
        )
        row = await reply(node, "alice@example.com", thread.addresses["alice"], raw)
        assert (row.status, row.reply_text) == (InboundStatus.delivered, expected), charset


async def test_an_empty_reply_with_only_the_quote_is_rejected(node: Node, sink: SmtpSink) -> None:
    thread = await make_thread(node)
    raw = build_mail(
        "alice@example.com",
        thread.addresses["alice"],
        "On Mon, 23 Nov 2026 at 10:00, Bob <bob@example.com> wrote:\n> Can you check?\n> Thanks\n",
    )
    row = await reply(node, "alice@example.com", thread.addresses["alice"], raw)
    assert row.status == InboundStatus.rejected
    assert row.reason and row.reason.startswith("empty reply")
    assert row.quote and "Can you check?" in row.quote
    assert sink.received == []


async def test_the_null_sender_is_never_acted_on(node: Node, sink: SmtpSink) -> None:
    thread = await make_thread(node)
    raw = build_mail("MAILER-DAEMON@mx.example", thread.addresses["alice"], "Undeliverable")
    row = await reply(node, "", thread.addresses["alice"], raw)
    assert row.status == InboundStatus.rejected
    assert row.reason and "null sender" in row.reason
    await _still_serving(node, thread.addresses["alice"])
    await sink.wait_for(2)
    assert all("Undeliverable" not in m.text for m in sink.received)


async def test_a_reply_from_another_address_is_rejected(node: Node, sink: SmtpSink) -> None:
    thread = await make_thread(node)
    raw = build_mail("mallory@example.net", thread.addresses["alice"], "Close this, please.")
    row = await reply(node, "mallory@example.net", thread.addresses["alice"], raw)
    assert row.status == InboundStatus.rejected
    assert row.reason and "mallory@example.net" in row.reason
    assert sink.received == []


async def test_mail_is_analysed_in_a_separate_process(tmp_path: Path, sink: SmtpSink) -> None:
    """The default: MIME and talon run in a worker process, not on the SMTP event loop."""
    async with running(settings_for(tmp_path, sink, cpu_workers=1), app, http=False) as node:
        thread = await make_thread(node)
        big = "A long reply.\n" + "x" * 70 + "\n"
        raw = build_mail(
            "alice@example.com",
            thread.addresses["alice"],
            big * 20_000 + "\nOn Mon, 23 Nov 2026, Bob <bob@example.com> wrote:\n> q\n",
        )
        row = await reply(node, "alice@example.com", thread.addresses["alice"], raw)
        assert row.status == InboundStatus.delivered
        assert row.reply_text and row.reply_text.startswith("A long reply.")
