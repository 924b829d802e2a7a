"""The public reply parsers ``mailbot eval-strip`` measures :mod:`mailbot.strip.reply` against.

Each takes the same :class:`Body` and answers a :class:`~mailbot.strip.reply.Stripped`, so the
evaluation scores them with one rule. talon is used as its README shows (quotations, then its
brute-force signature cut); ``email-reply-parser`` and ``mail-parser-reply`` are dev-only
dependencies, imported only when asked for. Parsers that read only text get the text/plain
part, or talon's rendering of the HTML when there is none.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from mailbot.strip.html_text import html_to_text
from mailbot.strip.reply import Stripped


@dataclass(frozen=True)
class Body:
    """What a stripper gets: the decoded text and HTML bodies and the sender."""

    text: str | None
    html: str | None
    sender: str | None


def _text_of(body: Body) -> str:
    """Plain text for parsers that read only text: text/plain, else talon's HTML rendering."""
    if body.text and body.text.strip():
        return body.text
    from talon.utils import html_to_text as talon_html_to_text

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (talon_html_to_text(body.html or "") or b"").decode("utf-8", errors="replace")


def talon_alone(body: Body, own_renderer: bool = False) -> Stripped:
    """talon as its README uses it: quotations, then the brute-force signature cut.

    talon's HTML output is rendered with mailbot's renderer, so that the comparison measures
    the quote stripping and not the HTML-to-text step; ``own_renderer`` uses talon's.
    """
    from talon import quotations
    from talon.signature.bruteforce import extract_signature
    from talon.utils import html_to_text as talon_html_to_text

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # html5lib's DataLossWarning on Outlook markup
        if body.text and body.text.strip():
            reply = str(quotations.extract_from_plain(body.text))
        else:
            html = str(quotations.extract_from_html(body.html or ""))
            if own_renderer:
                reply = (talon_html_to_text(html) or b"").decode("utf-8", errors="replace")
            else:
                reply = html_to_text(html)
    text, sig = extract_signature(reply)
    return Stripped(str(text), reply, sig, None)


def talon_own_renderer(body: Body) -> Stripped:
    return talon_alone(body, own_renderer=True)


def email_reply_parser(body: Body) -> Stripped:
    from email_reply_parser import EmailReplyParser

    reply = str(EmailReplyParser.parse_reply(_text_of(body)))
    return Stripped(reply, reply, None, None)


def mail_parser_reply(body: Body) -> Stripped:
    from mailparser_reply import EmailReplyParser
    from mailparser_reply.constants import MAIL_LANGUAGES

    parsed = EmailReplyParser(languages=list(MAIL_LANGUAGES)).read(_text_of(body))
    first = parsed.replies[0] if parsed.replies else None
    reply = str(first.body) if first else ""
    full = str(first.full_body) if first else ""
    return Stripped(reply, full or reply, None, None)
