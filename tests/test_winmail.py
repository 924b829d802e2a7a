"""Outlook's winmail.dat (TNEF): the files inside handed to bots as attachments of their own,
the winmail.dat kept; hostile streams unpack to nothing, with the reason, in bounded work."""

from __future__ import annotations

import hashlib
import struct
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailbot import Bot, InboundMail, Mailbot
from mailbot.bots.comments import CommentsBot
from mailbot.store import conversations, winmail
from mailbot.store.models import InboundStatus
from mailbot.testing import Harness

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40
CSV = b"when,what\n2026-03-02,outage\n"


def _object(level: int, name: int, kind: int, data: bytes) -> bytes:
    """One TNEF attribute: level, id, type, length, data, checksum (MS-OXTNEF 2.1.3.1)."""
    check = sum(data) & 0xFFFF
    return struct.pack("<BHHI", level, name, kind, len(data)) + data + struct.pack("<H", check)


def _unicode_prop(prop: int, text: str) -> bytes:
    """A MAPI PT_UNICODE property: type, id, one value (length, UTF-16, padding to 4)."""
    value = (text + "\0").encode("utf-16-le")
    pad = b"\0" * (-len(value) % 4)
    return struct.pack("<HHII", 0x001F, prop, 1, len(value)) + value + pad


def tnef(files: list[tuple[str, str | None, bytes]], *, mapi: bytes | None = None) -> bytes:
    """A winmail.dat as Outlook writes one: version, code page, message class, then per file
    its rendering data, 8.3 title, data and MAPI properties (the long file name)."""
    out = struct.pack("<IH", 0x223E9F78, 0x0001)
    out += _object(1, 0x9006, 0x0008, struct.pack("<I", 0x00010000))  # attTnefVersion
    out += _object(1, 0x9007, 0x0006, struct.pack("<II", 1252, 0))  # attOemCodepage
    out += _object(1, 0x8008, 0x0007, b"IPM.Microsoft Mail.Note\0")  # attMessageClass
    for short, long, data in files:
        out += _object(2, 0x9002, 0x0006, b"\x01\x00\xff\xff\xff\xff" + b"\0" * 8)
        out += _object(2, 0x8010, 0x0001, short.encode("cp1252") + b"\0")  # attAttachTitle
        out += _object(2, 0x800F, 0x0006, data)  # attAttachData
        props = mapi
        if props is None:
            props = struct.pack("<I", 1) + _unicode_prop(0x3707, long) if long else b"\0" * 4
        out += _object(2, 0x9005, 0x0006, props)  # attAttachment
    return out


def _mail(sender: str, to: str, blob: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, "Re: test"
    msg.set_content("The files are attached.")
    msg.add_attachment(blob, maintype="application", subtype="ms-tnef", filename="winmail.dat")
    return msg.as_bytes()


class Keeper(Bot):
    name = "keeper"

    async def process(self, mail: InboundMail) -> None:
        self.ctx.state["seen"] = [
            [
                a.filename,
                a.content_type,
                a.size,
                a.within,
                hashlib.sha256(await a.read()).hexdigest(),
            ]
            for a in mail.attachments
        ]


APP = Mailbot(bots=[Keeper])


def test_the_files_of_a_winmail_dat_come_out_with_their_long_names() -> None:
    blob = tnef([("QUARTE~1.PDF", "Quarterly report 2026.pdf", PDF), ("caf\xe9.csv", None, CSV)])
    files, why = winmail.unpack(blob)
    assert why is None
    assert [(f.filename, f.content_type, f.data) for f in files] == [
        ("Quarterly report 2026.pdf", "application/pdf", PDF),
        ("caf\xe9.csv", "text/csv", CSV),  # the 8.3 title, in Outlook's code page
    ]


async def test_a_bot_gets_the_files_of_a_winmail_dat_beside_it(tmp_path: Path) -> None:
    blob = tnef([("QUARTE~1.PDF", "Quarterly report 2026.pdf", PDF), ("notes.csv", None, CSV)])
    async with Harness(APP, tmp_path) as h:
        thread = await h.thread(bot="keeper")
        row = await h.receive(_mail("alice@example.com", thread.addresses["alice"], blob))
        assert row.status is InboundStatus.delivered, row.reason
        async with h.sessions() as session:
            convo = await conversations.get(session, "issue-1")
    assert convo is not None and convo.state is not None
    digest = hashlib.sha256
    assert convo.state["seen"] == [
        ["winmail.dat", "application/ms-tnef", len(blob), None, digest(blob).hexdigest()],
        ["Quarterly report 2026.pdf", "application/pdf", len(PDF), 0, digest(PDF).hexdigest()],
        ["notes.csv", "text/csv", len(CSV), 0, digest(CSV).hexdigest()],
    ]


HOSTILE = {
    # A MAPI block that says it holds 4 billion properties (tnefparse would count them all).
    "property count": struct.pack("<I", 0xFFFFFFFF) + _unicode_prop(0x3707, "a.txt"),
    # One short property with 4 billion values (each a slice past the end, never an error).
    "value count": struct.pack("<IHHI", 1, 0x1002, 0x3700, 0xFFFFFFFF) + b"\0" * 8,
    # An embedded Outlook message: tnefparse would parse it whole, recipients and all.
    "embedded": struct.pack("<IHHII", 1, 0x000D, 0x3701, 1, 20)
    + b"\x07\x03\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46"
    + struct.pack("<I", 0x223E9F78),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_mapi_block_is_refused_before_tnefparse_reads_it(case: str) -> None:
    files, why = winmail.unpack(tnef([("A.TXT", None, b"x")], mapi=HOSTILE[case]))
    assert files == [] and why is not None and why.startswith("winmail.dat not unpacked: ")


def test_streams_that_are_not_winmail_dat_unpack_to_nothing_with_a_reason() -> None:
    tiny = struct.pack("<BHHI", 2, 0x9002, 6, 0) + b"\0\0"  # 11 bytes: the smallest object
    many = struct.pack("<IH", 0x223E9F78, 1) + tiny * (
        winmail.MAX_OBJECTS + 2
    )  # the last is too short to count
    for blob, reason in [
        (b"", "not a TNEF stream"),
        (b"PK\x03\x04" + b"\0" * 100, "not a TNEF stream"),
        (many, f"more than {winmail.MAX_OBJECTS} objects"),
    ]:
        files, why = winmail.unpack(blob)
        assert files == [] and why is not None and reason in why, (blob[:20], why)
    # Cut short in the middle of its last file: that file is not there, and nothing raises.
    cut = tnef([("A.TXT", None, b"one"), ("B.TXT", None, b"two")])[:-30]
    assert [f.data for f in winmail.unpack(cut)[0]] == [b"one"]


async def test_a_broken_winmail_dat_is_kept_and_the_mail_goes_on(tmp_path: Path) -> None:
    blob = tnef([("A.TXT", None, b"x")], mapi=HOSTILE["property count"])
    async with Harness(APP, tmp_path) as h:
        thread = await h.thread(bot="keeper")
        row = await h.receive(_mail("alice@example.com", thread.addresses["alice"], blob))
    assert row.status is InboundStatus.delivered, row.reason
    assert row.parsed is not None
    assert "winmail.dat not unpacked: a MAPI count runs past the end" in row.parsed["defects"]


async def test_the_comments_bot_lists_the_files_of_a_winmail_dat_not_the_winmail_dat(
    tmp_path: Path,
) -> None:
    blob = tnef([("QUARTE~1.PDF", "Quarterly report 2026.pdf", PDF)])
    async with Harness(Mailbot(bots=[CommentsBot]), tmp_path) as h:
        thread = await h.thread(people=("alice", "bob"))
        await h.receive(_mail("alice@example.com", thread.addresses["alice"], blob))
        [told] = h.transport.to("bob@example.com")
    text = told.text.replace("\r\n", "\n")
    assert "Attached:\n- Quarterly report 2026.pdf (10.0 KiB)\n\n" in text
    assert "winmail.dat" not in text
