"""Attachments in a bot's hands (mailbot.MailAttachment): described, read and streamed from
the blob store; inline images known also without a Content-Disposition; a bot's size limit;
the comments bot listing what was attached."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from pathlib import Path

from mailbot import Bot, InboundMail, Mailbot
from mailbot.bots.comments import CommentsBot
from mailbot.store import conversations
from mailbot.store.models import InboundStatus
from mailbot.testing import Harness, RecordingTransport

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 300  # 76.8 KB, binary
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 5000


def _mail(sender: str, to: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, "Re: test"
    msg.set_content("Here is the report, and a picture of the error.")
    msg.add_alternative('<p>Here is the report.</p><img src="cid:shot@x">', subtype="html")
    html = msg.get_body(("html",))
    assert isinstance(html, EmailMessage)
    html.add_related(PNG, "image", "png", cid="<shot@x>")
    # Clients often send an inline image with no Content-Disposition at all.
    [image] = [p for p in html.walk() if p.get_content_type() == "image/png"]
    del image["Content-Disposition"]
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="report.pdf")
    return msg.as_bytes()


class Keeper(Bot):
    name = "keeper"

    async def process(self, mail: InboundMail) -> None:
        seen = []
        for attachment in mail.attachments:
            whole = await attachment.read()
            streamed = b"".join([chunk async for chunk in attachment.stream()])
            assert streamed == whole and len(whole) == attachment.size
            seen.append(
                [
                    attachment.filename,
                    attachment.content_type,
                    attachment.content_id,
                    attachment.inline,
                    hashlib.sha256(whole).hexdigest(),
                ]
            )
        self.ctx.state["seen"] = seen


class Picky(Keeper):
    name = "picky"
    max_attachment_bytes = 10_000


APP = Mailbot(bots=[Keeper, Picky, CommentsBot])


async def test_a_bot_reads_and_streams_each_attachment_as_it_was_sent(tmp_path: Path) -> None:
    async with Harness(APP, tmp_path) as h:
        thread = await h.thread(bot="keeper")
        row = await h.receive(_mail("alice@example.com", thread.addresses["alice"]))
        assert row.status is InboundStatus.delivered, row.reason
        async with h.sessions() as session:
            convo = await conversations.get(session, "issue-1")
        assert convo is not None and convo.state is not None
        assert convo.state["seen"] == [
            [None, "image/png", "shot@x", True, hashlib.sha256(PNG).hexdigest()],
            ["report.pdf", "application/pdf", None, False, hashlib.sha256(PDF).hexdigest()],
        ]


async def test_a_bot_with_a_size_limit_bounces_bigger_attachments(tmp_path: Path) -> None:
    async with Harness(APP, tmp_path) as h:
        thread = await h.thread(bot="picky")
        row = await h.receive(_mail("alice@example.com", thread.addresses["alice"]))
        assert row.status is InboundStatus.bounced
        assert row.reason == "an attachment is over this address's limit of 10000 bytes"


async def test_the_comments_bot_lists_the_files_with_the_comment(tmp_path: Path) -> None:
    async with Harness(APP, tmp_path, transport=RecordingTransport()) as h:
        thread = await h.thread()
        await h.receive(_mail("alice@example.com", thread.addresses["alice"]))
        [told] = h.transport.to("bob@example.com")
        text = told.text.replace("\r\n", "\n")
        assert "Attached:\n- report.pdf (75.0 KiB)\n" in text
        assert "image/png" not in text and "unnamed" not in text  # the inline picture is not a file
