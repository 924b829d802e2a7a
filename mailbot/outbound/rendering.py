"""What a bot's mail holds besides its text: the HTML alternative of a body written in
Markdown, and the files attached to it.

Markdown goes through markdown-it-py (CommonMark; raw HTML in the source stays text, not
markup) and the result through nh3 (ammonia), as the page cleans mail it shows: a comment
quoted into a notification is someone else's text, and must not become their markup in
everyone's inbox. An image shows only from the mail itself (``cid:``): a remote one would
load when the mail is opened and tell its author who read it and when (a tracking pixel),
so it becomes a link to its address instead.

markdown-it-py's time is linear in the text but slow on some input (0.35 s for 32 KiB of
``![``, 1.4 s for 128 KiB, on this project's 2-core machine), so a body over
:data:`MAX_MARKDOWN` characters is sent as plain text only, and the work runs in a thread,
off the event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.token import Token

from mailbot.store.attachments import clean_filename

MAX_MARKDOWN = 32 * 1024  # characters; a longer body has no HTML alternative
_MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
# What a message body needs; links keep http(s) and mailto only (nh3's default schemes).
_TAGS = {
    *("p", "br", "hr", "em", "strong", "code", "pre", "blockquote", "a", "img"),
    *("ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "del", "s"),
    *("table", "thead", "tbody", "tr", "th", "td"),
}
_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "ol": {"start"}}


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    parser = MarkdownIt("commonmark", {"html": False}).enable("table").enable("strikethrough")
    parser.add_render_rule("image", _image)
    return parser


def _image(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    """``![alt](src)``: an image when ``src`` is a part of this mail, else a link to it."""
    token = tokens[idx]
    src = str(token.attrGet("src") or "")
    if src.lower().startswith("cid:"):
        return str(self.image(tokens, idx, options, env))
    alt = self.renderInlineAsText(token.children or [], options, env) or src
    inside = sum({"link_open": 1, "link_close": -1}.get(t.type, 0) for t in tokens[:idx])
    if inside > 0:  # a linked image (a badge): its words, the link is the outer one
        return str(escapeHtml(alt))
    return f'<a href="{escapeHtml(src)}">{escapeHtml(alt)}</a>'


def _only_our_images(tag: str, attribute: str, value: str) -> str | None:
    if tag == "img" and attribute == "src" and not value.lower().startswith("cid:"):
        return None  # a raw <img> cannot come from Markdown with html off; kept out anyway
    return value


def markdown_html(text: str) -> str | None:
    """The cleaned HTML of ``text`` read as Markdown; None when it is too long to render."""
    if len(text) > MAX_MARKDOWN:
        return None
    html = _parser().render(text)
    return nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes=nh3.ALLOWED_URL_SCHEMES | {"cid"},
        attribute_filter=_only_our_images,
    )


async def html_alternative(text: str) -> str | None:
    """:func:`markdown_html` in a thread: the event loop goes on meanwhile."""
    if len(text) > MAX_MARKDOWN:
        return None
    return await asyncio.to_thread(markdown_html, text)


@dataclass(frozen=True)
class OutgoingFile:
    """A file attached to a mail a bot sends: ``OutgoingFile("report.csv", data, "text/csv")``.
    The name is cleaned (no path, no control character) and a type that is not one becomes
    ``application/octet-stream``."""

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"

    def cleaned(self) -> tuple[str, str, str, bytes]:
        """(file name, main type, subtype, bytes), each safe to put in a header."""
        kind = self.content_type.strip().lower()
        # multipart/* and message/* have structure of their own: not a file's bytes.
        if not _MIME_TYPE.fullmatch(kind) or kind.startswith(("multipart/", "message/")):
            kind = "application/octet-stream"
        main, _, sub = kind.partition("/")
        return clean_filename(self.filename) or "attachment", main, sub, bytes(self.content)


def total_size(files: Sequence[OutgoingFile]) -> int:
    return sum(len(f.content) for f in files)
