"""What a bot sends: Markdown with its HTML alternative, files attached, ``ctx.reply``; and
the one-line inbound mail of the testing kit (commands, a quoted part, attachments)."""

from __future__ import annotations

from pathlib import Path

from mailbot import Bot, InboundMail, Mailbot, OutgoingFile, command
from mailbot.outbound.rendering import MAX_MARKDOWN, markdown_html
from mailbot.testing import Harness, InboundStatus, build_mail

HOSTILE = (
    "**Done**, see [the log](https://example.org/log) and [this](javascript:alert(1)).\n\n"
    '<script>alert("x")</script> <img src=x onerror=alert(1)>\n\n'
    "| a | b |\n|---|---|\n| 1 | 2 |\n"
)


class ReportBot(Bot):
    name = "report"

    async def process(self, mail: InboundMail) -> None:
        assert mail.participant is not None and mail.conversation is not None
        await self.ctx.comment(mail)
        files = [
            OutgoingFile("report.csv", b"a,b\n1,2\n", "text/csv"),
            OutgoingFile("../../etc/pass\r\nX-Evil: 1.bin", b"\x00\xff" * 10, "bad type\r\n"),
        ]
        await self.ctx.reply(mail, HOSTILE, markdown=True, files=files)
        others = [p for p in mail.conversation.participants if p.id != mail.participant.id]
        await self.ctx.notify(
            others, subject="news", body=mail.reply, in_reply_to=mail, markdown=True
        )

    @command(help="say what you got")
    async def echo(self, mail: InboundMail) -> str:
        self.ctx.state["echoed"] = self.ctx.state.get("echoed", 0) + 1
        return f"got {len(mail.attachments)} file(s); quote: {mail.quote is not None}"


APP = Mailbot(bots=[ReportBot])


async def test_a_reply_in_markdown_has_a_clean_html_alternative_and_its_files(
    tmp_path: Path,
) -> None:
    async with Harness(APP, tmp_path) as h:
        thread = await h.thread(bot="report", people=("alice", "bob"))
        row = await h.receive(build_mail("alice@example.com", thread.addresses["alice"], "hi"))
        assert row.status is InboundStatus.delivered, row.reason
        [answer] = h.transport.to("alice@example.com")
    assert answer.message["Subject"] == "Re: test"  # already a reply: no second "Re:"
    assert answer.text.strip() == HOSTILE.strip()  # the Markdown, as written
    html = answer.html
    assert html is not None
    assert "<strong>Done</strong>" in html and '<a href="https://example.org/log"' in html
    assert "<td>1</td>" in html  # tables
    # Raw HTML in the source is text, not markup; a javascript: link is no link.
    assert "<script" not in html and "&lt;script&gt;" in html
    assert "<img" not in html and "&lt;img" in html
    assert 'href="javascript' not in html and "[this](javascript:alert(1))" in html
    [(name1, type1, data1), (name2, type2, data2)] = answer.files
    assert (name1, type1, data1) == ("report.csv", "text/csv", b"a,b\n1,2\n")
    assert "\r" not in (name2 or "") and "\n" not in (name2 or "") and "/" not in (name2 or "")
    assert (type2, data2) == ("application/octet-stream", b"\x00\xff" * 10)
    assert "X-Evil" not in answer.message


async def test_notify_in_markdown_renders_the_others_mail(tmp_path: Path) -> None:
    async with Harness(APP, tmp_path) as h:
        thread = await h.thread(bot="report", people=("alice", "bob"))
        await h.receive(build_mail("alice@example.com", thread.addresses["alice"], "*fine*"))
        [note] = h.transport.to("bob@example.com")
    assert note.text.strip() == "*fine*"
    assert note.html is not None and "<em>fine</em>" in note.html
    assert note.files == []


def test_markdown_over_the_limit_is_sent_as_plain_text_only() -> None:
    assert markdown_html("![" * (MAX_MARKDOWN // 2)) is not None
    assert markdown_html("![" * (MAX_MARKDOWN // 2 + 1)) is None


async def test_one_line_builds_a_mail_with_commands_a_quote_and_attachments(
    tmp_path: Path,
) -> None:
    async with Harness(APP, tmp_path) as h:
        thread = await h.thread(bot="report", people=("alice", "bob"))
        raw = build_mail(
            "alice@example.com",
            thread.addresses["alice"],
            "",
            commands=["/echo"],
            quote="/echo\nan old line",
            attachments=[("a.txt", b"one"), ("b.png", b"\x89PNG", "image/png")],
        )
        row = await h.receive(raw)
        assert row.status is InboundStatus.delivered, row.reason
        assert h.command_results(row) == [("/echo", "done")]
        assert await h.comments() == []  # commands only: no comment
        state = (await h.conversation()).state
        [transcript] = h.transport.to("alice@example.com")
    assert state == {"echoed": 1}  # once: the /echo in the quote did not run
    # One command ran: the one in the quote did not; the attachments were seen.
    assert transcript.text.count("got 2 file(s); quote: True") == 1


def test_a_remote_image_in_markdown_becomes_a_link_never_a_tracking_pixel() -> None:
    html = markdown_html(
        "![pixel](https://t.example/p.gif?who=ann) ![](http://t.example/q.png) ![logo](cid:logo@x)"
    )
    assert html is not None
    assert "<img" in html and 'src="cid:logo@x"' in html  # a part of the mail itself: shown
    assert html.count("<img") == 1  # nothing that loads from elsewhere when the mail is opened
    assert '<a href="https://t.example/p.gif?who=ann" rel="noopener noreferrer">pixel</a>' in html
    assert (
        '<a href="http://t.example/q.png" rel="noopener noreferrer">http://t.example/q.png</a>'
        in (html)
    )


def test_a_linked_remote_image_keeps_its_link_and_shows_its_words() -> None:
    html = markdown_html("[![build passing](https://ci.example/badge.svg)](https://ci.example/run)")
    assert html is not None
    assert "<img" not in html
    assert '<a href="https://ci.example/run" rel="noopener noreferrer">build passing</a>' in html
