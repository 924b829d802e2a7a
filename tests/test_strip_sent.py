"""Cutting a reply where the mail we sent is quoted (issue #14), whatever the client wrote
above it. The replies here quote a real notification of ours, as clients do: under headers in
languages and layouts the rules do not know, re-wrapped, with footnotes, or with no header."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailbot.bots.default import app
from mailbot.serve import running
from mailbot.strip.reply import strip
from mailbot.strip.sent import cut_at_sent
from mailbot.testing import build_mail, reply, settings_for
from tests.sinks import ScriptedSink
from tests.test_strip_clients import notify_bob

COMMENT = "The build fails on ARM since the last release; can someone look at the linker flags?"
SENT = f"Alice wrote:\n\n{COMMENT}\n\n-- \nReply to this email to comment.\n"
QUOTED = SENT.rstrip("\n")


def _quoted(prefix: str, text: str = QUOTED) -> str:
    return "\n".join(f"{prefix}{line}".rstrip() for line in text.split("\n"))


REPLIES = {
    # An Outlook header block in Finnish, the quote unprefixed: no rule knows these words.
    "outlook, finnish": (
        "Katson sitä huomenna.\n\n"
        "Lähettäjä: mailbot <notifications@localhost>\n"
        "Lähetetty: lauantai 28. marraskuuta 2026 10.21\n"
        "Vastaanottaja: Bob <bob@example.com>\nAihe: Re: Issue issue-1\n\n" + QUOTED
    ),
    # The same in Welsh: no rule knows these field names.
    "outlook, welsh": (
        "Edrycha i arno yfory.\n\n"
        "Oddi wrth: mailbot <notifications@localhost>\n"
        "Anfonwyd: Dydd Sadwrn, 28 Tachwedd 2026 10:21\n"
        "At: Bob <bob@example.com>\nPwnc: Re: Issue issue-1\n\n" + QUOTED
    ),
    # A client that quotes with no header and no marks at all.
    "no header": "I'll look tonight.\n\n" + QUOTED,
    # Re-wrapped at 35 columns with ">" and no space, under a Finnish attribution.
    "rewrapped": (
        "Sure.\n\nmailbot <notifications@localhost> kirjoitti 28.11.2026 klo 10.21:\n"
        ">Alice wrote:\n>\n>The build fails on ARM since the\n>last release; can someone look at\n"
        ">the linker flags?\n"
    ),
    # An attribution wrapped over two lines, in Welsh, ISO-like date.
    "welsh, two lines": (
        "Edrycha i arno heno.\n\nAr 2026-11-28 10:21 GMT+01:00, ysgrifennodd mailbot\n"
        "<notifications@localhost>:\n\n" + _quoted("> ")
    ),
    # HTML turned into text by the client: a link footnote inside and below the quote.
    "footnotes": (
        "Yes.\n\n-----Mensagem original-----\nDe: mailbot\n"
        "Alice wrote: The build fails on ARM [1] since the last release; can someone look at "
        "the linker flags?\n[1] https://example.com/issues/1\n"
    ),
}
OWN = {
    "outlook, finnish": "Katson sitä huomenna.",
    "outlook, welsh": "Edrycha i arno yfory.",
    "no header": "I'll look tonight.",
    "rewrapped": "Sure.",
    "welsh, two lines": "Edrycha i arno heno.",
    "footnotes": "Yes.",
}


@pytest.mark.parametrize("name", sorted(REPLIES))
def test_the_quote_of_what_we_sent_is_cut_with_its_header(name: str) -> None:
    stripped = strip(REPLIES[name], None, "bob@example.com", [SENT])
    assert stripped.reply == OWN[name]
    assert stripped.quote_rule == "the quoted text of the mail we sent"
    assert stripped.quote is not None and "linker flags" in stripped.quote
    assert OWN[name] not in stripped.quote  # nothing of the person's own text went with it


@pytest.mark.parametrize("name", ["outlook, welsh", "no header"])
def test_without_what_we_sent_the_rules_alone_keep_these_quotes(name: str) -> None:
    # The cases above that only the sent text can cut: the rules keep the quote in.
    assert "linker flags" in strip(REPLIES[name], None, "bob@example.com").reply


def test_an_answer_written_between_the_quoted_lines_is_left_to_the_rules_and_kept() -> None:
    body = (
        "On Sat, 28 Nov 2026, mailbot <notifications@localhost> wrote:\n> Alice wrote:\n>\n"
        "> The build fails on ARM since the last release; can someone look at the linker "
        "flags?\n\nI can, I have an ARM board right here and will report back tonight.\n"
    )
    assert cut_at_sent(body, [SENT]) is None
    stripped = strip(body, None, "bob@example.com", [SENT])
    assert "I have an ARM board right here" in stripped.reply


def test_a_few_words_of_ours_in_the_persons_own_text_are_not_a_quote() -> None:
    body = "Yes, the build fails on ARM, and not only since the last release.\n"
    assert cut_at_sent(body, [SENT]) is None
    assert cut_at_sent("Fine.\n\n> Alice wrote: hi\n", ["Alice wrote: hi"]) is None  # too short


def test_the_earliest_of_several_sent_mails_is_where_the_quote_starts() -> None:
    older = "Carol wrote:\n\nI tried the patch and the linker still complains about ld.gold.\n"
    body = (
        "Thanks both.\n\nOn Sat, 28 Nov 2026, mailbot <notifications@localhost> wrote:\n"
        + _quoted("> ")
        + "\n>\n"
        + _quoted("> ", older)
    )
    found = cut_at_sent(body, [older, SENT])
    assert found is not None and found.reply == "Thanks both." and found.which == 1


async def test_a_reply_to_a_notification_is_cut_where_the_notification_is_quoted(
    tmp_path: Path,
) -> None:
    async with ScriptedSink() as sink:
        async with running(settings_for(tmp_path, sink.url), app, http=False) as node:
            _, sent, plain = await notify_bob(node, sink)
            quoted = plain.rstrip("\n")
            address = str(sent["Reply-To"])
            text = (
                "Katson sitä huomenna.\n\nLähettäjä: mailbot <notifications@localhost>\n"
                "Aihe: Re: Issue issue-1\n\n" + quoted
            )
            row = await reply(
                node, "bob@example.com", address, build_mail("bob@example.com", address, text)
            )
    assert row.status.value == "delivered", row.reason
    assert row.reply_text == "Katson sitä huomenna."
    cut = (row.outcome or {}).get("cut", {})
    assert cut.get("quote") == "the quoted text of the mail we sent"
    # The explanation names each rule, where it fired, and which one decided.
    decided = [r for r in cut["rules"] if r["part"] == "quote" and r["decided"]]
    assert [r["rule"] for r in decided] == ["sent-text"] and decided[0]["line"] == 2


QUOTE = f"> Alice wrote:\n>\n> {COMMENT}\n"


@pytest.mark.parametrize(
    ("body", "own"),
    [
        # A short answer below the quote (bottom-posting) is the person's: left to the rules,
        # which keep the question it answers as a Markdown quote.
        (
            f"On Sat, 28 Nov 2026, mailbot <n@localhost> wrote:\n{QUOTE}\nFixed now.\n",
            QUOTE + "\nFixed now.",
        ),
        # Their last line ends with a colon and holds a time or an address: not a header.
        (
            f"Thanks. I called at 10:30 and here is my answer:\n{QUOTE}",
            "Thanks. I called at 10:30 and here is my answer:",
        ),
        (
            f"Please write to carol@example.com about it, she says:\n{QUOTE}",
            "Please write to carol@example.com about it, she says:",
        ),
        # Lines that look like fields but name no address: not an Outlook block.
        (
            f"Status: done\nOwner: me\nNext step: call at 3\n{QUOTE}",
            "Status: done\nOwner: me\nNext step: call at 3",
        ),
        # Their own first words repeat ours, and our mail is quoted below: cut at the quote.
        (
            f"Alice wrote: the build fails on ARM - since when?\n\n{QUOTE}",
            "Alice wrote: the build fails on ARM - since when?",
        ),
    ],
)
def test_the_persons_own_lines_are_never_taken_for_the_quote(body: str, own: str) -> None:
    assert strip(body, None, "bob@example.com", [SENT]).reply == own
