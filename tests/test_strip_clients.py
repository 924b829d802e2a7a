"""Issue #14's end-to-end set: one notification mailbot really sends, answered in the styles
of many mail clients (composed here in each client's format), each cut exactly where the
notification is quoted by the sent-text rule; and with the sent text missing (an old token),
the rules alone still cut the common ones."""

from __future__ import annotations

from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from mailbot.bots.default import app
from mailbot.serve import Node, running
from mailbot.strip.reply import Stripped, strip
from mailbot.testing import Thread, make_thread, reply, settings_for
from tests.sinks import ScriptedSink

COMMENT = "The printer on floor 3 jams on every second page since the firmware update."
OWN = "I saw it too; I will call the vendor this afternoon."
AT = "notifications@localhost"


def _marked(text: str) -> str:
    return "\n".join(f"> {line}".rstrip() for line in text.split("\n"))


# Each client style: the whole plain-text reply, made from the quoted notification.
STYLES: dict[str, Callable[[str], str]] = {
    "gmail": lambda q: (
        f"{OWN}\n\nOn Sat, Nov 28, 2026 at 10:21 AM mailbot <{AT}> wrote:\n\n{_marked(q)}\n"
    ),
    "outlook desktop": lambda q: (
        f"{OWN}\n\n________________________________\nFrom: mailbot <{AT}>\n"
        "Sent: Saturday, November 28, 2026 10:21 AM\nTo: Bob <bob@example.com>\n"
        f"Subject: Re: Issue issue-1\n\n{q}\n"
    ),
    "outlook web": lambda q: (
        f"{OWN}\n\n________________________________\n*From:* mailbot <{AT}>\n"
        "*Sent:* Saturday, November 28, 2026 10:21\n*To:* bob@example.com\n"
        f"*Subject:* Re: Issue issue-1\n\n{q}\n"
    ),
    "outlook ios": lambda q: (
        f"{OWN}\n\nGet Outlook for iOS<https://aka.ms/o0ukef>\n"
        f"________________________________\nFrom: mailbot <{AT}>\n"
        "Sent: Saturday, November 28, 2026 10:21:04 AM\nTo: bob@example.com\n"
        f"Subject: Re: Issue issue-1\n\n{q}\n"
    ),
    "outlook android": lambda q: (
        f"{OWN}\n\nGet Outlook for Android<https://aka.ms/AAb9ysg>\n"
        f"________________________________\nFrom: mailbot <{AT}>\n"
        "Sent: Saturday, November 28, 2026 10:21:04 AM\nTo: bob@example.com\n"
        f"Subject: Re: Issue issue-1\n\n{q}\n"
    ),
    "apple mail": lambda q: (
        f"{OWN}\n\n> On 28 Nov 2026, at 10:21, mailbot <{AT}> wrote:\n>\n{_marked(q)}\n"
    ),
    "iphone": lambda q: (
        f"{OWN}\n\nSent from my iPhone\n\n> On 28 Nov 2026, at 10:21, mailbot <{AT}> wrote:\n"
        f">\n{_marked(q)}\n"
    ),
    "thunderbird": lambda q: f"{OWN}\n\nOn 28/11/2026 10:21, mailbot wrote:\n{_marked(q)}\n",
    "yahoo": lambda q: (
        f"{OWN}\n\n\n    On Saturday, November 28, 2026, 10:21:04 AM GMT+1, mailbot <{AT}> "
        f"wrote:\n\n\n{q}\n"
    ),
    "proton": lambda q: (
        f"{OWN}\n\n------- Original Message -------\nOn Saturday, November 28th, 2026 at "
        f"10:21, mailbot <{AT}> wrote:\n\n\n{_marked(q)}\n"
    ),
    "zoho": lambda q: (
        f"{OWN}\n\n---- On Sat, 28 Nov 2026 10:21:04 +0100 mailbot <{AT}> wrote ---\n\n{q}\n"
    ),
    "yandex": lambda q: f'{OWN}\n\n28.11.2026, 10:21, "mailbot" <{AT}>:\n{_marked(q)}\n',
    "gmx": lambda q: (
        f"{OWN}\n\nGesendet: Samstag, 28. November 2026 um 10:21 Uhr\n"
        f'Von: "mailbot" <{AT}>\nAn: bob@example.com\nBetreff: Re: Issue issue-1\n{q}\n'
    ),
    "gmail, french": lambda q: (
        f"{OWN}\n\nLe sam. 28 nov. 2026 à 10:21, mailbot <{AT}> a écrit :\n\n{_marked(q)}\n"
    ),
    "outlook, german": lambda q: (
        f"{OWN}\n\n-----Ursprüngliche Nachricht-----\nVon: mailbot <{AT}>\n"
        "Gesendet: Samstag, 28. November 2026 10:21\nAn: bob@example.com\n"
        f"Betreff: Re: Issue issue-1\n\n{q}\n"
    ),
    # A header in a language and a layout no rule knows (Welsh, verb first, the date last):
    # only the sent text can tell it goes with the quote.
    "unsupported language": lambda q: (
        f"{OWN}\n\nYsgrifennodd mailbot <{AT}> ar 28 Tach 2026 am 10:21:\n\n{_marked(q)}\n"
    ),
}
# The header line of each style that must go with the quote (its first words).
HEADERS = {
    "gmail": "On Sat",
    "outlook desktop": "____",
    "outlook web": "____",
    "outlook ios": "____",
    "outlook android": "____",
    "apple mail": "> On 28 Nov",
    "iphone": "> On 28 Nov",
    "thunderbird": "On 28/11",
    "yahoo": "On Saturday",
    "proton": "------- Original",
    "zoho": "---- On Sat",
    "yandex": "28.11.2026",
    "gmx": "Gesendet:",
    "gmail, french": "Le sam.",
    "outlook, german": "-----Ursprüngliche",
    "unsupported language": "Ysgrifennodd",
}
# What the rules alone cannot cut: a header in a language they do not know.
RULES_CANNOT = {"unsupported language"}


def _gmail_html(q: str) -> str:
    quoted = "<br>".join(q.split("\n"))
    return (
        f'<div dir="ltr">{OWN}</div><br><div class="gmail_quote"><div class="gmail_attr">'
        f"On Sat, Nov 28, 2026 at 10:21 AM mailbot &lt;{AT}&gt; wrote:<br></div>"
        f'<blockquote class="gmail_quote">{quoted}</blockquote></div>'
    )


async def notify_bob(node: Node, sink: ScriptedSink) -> tuple[Thread, EmailMessage, str]:
    """Alice comments: the notification mailbot sends Bob, and its plain text."""
    thread = await make_thread(node, people=("alice", "bob"))
    await reply(node, "alice@example.com", thread.addresses["alice"], COMMENT)
    [sent] = await sink.wait_for(1)
    message = message_from_bytes(sent.data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    body = message.get_body(("plain",))
    assert body is not None
    return thread, message, str(body.get_content())


async def _notification(tmp_path: Path) -> str:
    """The plain text of the notification mailbot sends when Alice comments."""
    async with ScriptedSink() as sink:
        async with running(settings_for(tmp_path, sink.url), app, http=False) as node:
            return (await notify_bob(node, sink))[2]


def _wrong(name: str, got: Stripped, quoted: str, *, by_sent: bool) -> str | None:
    """Why this reply was not cut exactly at the quote (None: it was)."""
    if got.reply != OWN:
        return f"{name}: reply {got.reply!r}"
    if got.quote is None or not got.quote.lstrip("> ").startswith(HEADERS[name].lstrip("> ")):
        return f"{name}: quote starts {(got.quote or '')[:40]!r}"
    if COMMENT not in " ".join((got.quote or "").replace(">", " ").split()):
        return f"{name}: the quoted comment is not in the quote"
    decided = [c.rule for c in got.cuts if c.part == "quote" and c.decided]
    if by_sent and decided != ["sent-text"]:
        return f"{name}: decided by {decided}"
    return None


async def test_a_real_notification_answered_in_sixteen_client_styles_is_cut_at_its_quote(
    tmp_path: Path,
) -> None:
    sent = await _notification(tmp_path)
    assert COMMENT in sent
    quoted = sent.rstrip("\n")
    assert len(STYLES) >= 15
    wrong = []
    for name, style in STYLES.items():
        got = strip(style(quoted), None, "bob@example.com", [sent])
        wrong.append(_wrong(name, got, quoted, by_sent=True))
    html = strip(None, _gmail_html(quoted), "bob@example.com", [sent])
    if html.reply != OWN or "sent-text" not in [c.rule for c in html.cuts if c.decided]:
        wrong.append(f"gmail html: {html.reply!r}")
    assert [w for w in wrong if w] == []


async def test_with_the_sent_text_missing_the_rules_still_cut_the_common_styles(
    tmp_path: Path,
) -> None:
    quoted = (await _notification(tmp_path)).rstrip("\n")
    wrong = []
    for name, style in STYLES.items():
        got = strip(style(quoted), None, "bob@example.com")
        if name in RULES_CANNOT:
            # The ">" lines go, the unknown header line stays: kept, never the person's text lost.
            assert got.reply.startswith(OWN) and got.reply != OWN
            continue
        wrong.append(_wrong(name, got, quoted, by_sent=False))
    assert [w for w in wrong if w] == []
