"""HTML-only mail as clean text, with the quoted history marked so the text rules see it.

Clients mark the quote in their HTML, not with ``>``: Gmail wraps it in ``gmail_quote``,
Apple Mail in ``<blockquote type="cite">``, Yahoo in ``yahoo_quoted``, Thunderbird puts a
``moz-cite-prefix`` line before its blockquote, Outlook starts it with a ``divRplyFwdMsg`` or
a ``<div>``/``<hr>`` whose top border separates reply from history. Each of those becomes
``>``-prefixed lines, Outlook's from its separator to the end of the body. A marked block that
is a forward (``---------- Forwarded message``) stays plain text: a forward is content.

Block elements give line breaks, ``<p>`` a blank line, ``<br>`` one break, list items a ``-``,
a table row one line with `` | `` between its cells.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from mailbot.strip.quotes import FORWARD, is_attribution

_BLOCK = {
    "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "hr", "pre", "ul", "ol",
    "dl", "dt", "dd", "section", "article", "header", "footer", "center", "address",
}  # fmt: skip
_PARA = {"p"}
_CELLS = {"td", "th"}
_SOFT_TAGS = _BLOCK | _PARA | {"blockquote"}  # a line break before and after
_QUOTE_CLASSES = ("gmail_quote", "yahoo_quoted", "moz-cite-prefix", "protonmail_quote")
_QUOTE_CLASS = re.compile("|".join(map(re.escape, _QUOTE_CLASSES)))  # any, anywhere in class
_LAST = "data-mailbot-last-quote"
_QUOTE_IDS = ("divrplyfwdmsg", "appendonsend", "mail-editor-reference-message-container")
_BORDER_TOP = re.compile(r"border-top\s*:\s*(solid|[^;]*\bsolid\b)", re.I)


def html_to_text(html: str) -> str:
    """Readable text from an HTML body; the quoted history as ``>`` lines."""
    if not html.strip():
        return ""
    from lxml import html as lxml_html

    parser = _parser()
    try:
        try:
            tree = lxml_html.fromstring(html, parser=parser)
        except ValueError:  # a str with an XML encoding declaration: lxml wants bytes
            tree = lxml_html.fromstring(html.encode("utf-8"), parser=parser)
    except Exception:  # noqa: BLE001 - lxml raises several types on hostile markup
        return ""
    for bad in tree.xpath("//script|//style|//head|//title|//comment()"):
        if bad.getparent() is not None:
            bad.drop_tree()
    _mark_outlook_history(tree)
    outer = tree.xpath("//blockquote[not(ancestor::blockquote)]")
    if outer:
        outer[-1].set(_LAST, "1")
    out: list[str] = []
    _render(tree, out, quoted=False)
    return _tidy("".join(out))


@functools.cache
def _parser() -> Any:
    """lxml.html's parser, its element classes chosen in C: lxml.html's own parser asks a
    Python method for the class of every element it hands out (a sixth of the time of a
    large body). The same classes, but for forms' (form, input, select, textarea, label:
    only their form helpers differ, which nothing here calls)."""
    from lxml import etree
    from lxml import html as lxml_html

    parser = etree.HTMLParser()
    parser.set_element_class_lookup(
        etree.ElementDefaultClassLookup(
            element=lxml_html.HtmlElement,
            comment=lxml_html.HtmlComment,
            pi=lxml_html.HtmlProcessingInstruction,
            entity=lxml_html.HtmlEntity,
        )
    )
    return parser


def _is_quote(el: Any, before: list[str]) -> bool:
    """A client's quote container, or a blockquote right below an attribution line.

    A bare ``<blockquote>`` with neither is history when it is the last one (clients put the
    history last); one followed by another quote is the writer's own quoting (an editor's
    quote button): it stays in the reply, marked with ``|`` instead of ``>``.
    """
    tag = el.tag if isinstance(el.tag, str) else ""
    if tag != "blockquote":
        classes = el.get("class")
        ident = el.get("id")
        if classes is None and ident is None:  # most elements: nothing to look at
            return False
        return _quote_container(classes, ident)
    if (el.get("type") or "").lower() == "cite":
        return True
    if el.get(_LAST) == "1":
        return True
    # Only the tail of what is rendered so far: the line right above this blockquote (the
    # last line with text once breaks are lines; cheaper than tidying the tail each time).
    previous = _line_above(before[-4:], whole=len(before) <= 4)
    if previous is None:  # not whole in the last 4 pieces: read the last 40
        previous = _line_above(before[-40:], whole=True)
    return previous is not None and previous != "" and is_attribution(previous)


def _quote_container(classes: str | None, ident: str | None) -> bool:
    """A client's quote container, by its class or id."""
    return _QUOTE_CLASS.search((classes or "").lower()) is not None or (
        (ident or "").lower() in _QUOTE_IDS
    )


def _line_above(pieces: list[str], whole: bool) -> str | None:
    """The last line with text in ``pieces`` ("" if none). Unless ``pieces`` is ``whole``,
    None where no break precedes that line in them: pieces before may belong to it."""
    tail = _ANY_BREAK.split("".join(pieces).replace("\xa0", " "))
    for at in range(len(tail) - 1, -1, -1):
        if tail[at].strip():
            return " ".join(tail[at].split()) if at > 0 or whole else None
    return "" if whole else None


def _mark_outlook_history(tree: Any) -> None:
    """Outlook has no quote element: history starts at a separator and runs to the end."""
    # Only elements with an id or a style can be a separator: lxml finds them in one pass.
    for el in tree.xpath("descendant-or-self::*[@id or @style]"):
        ident = (el.get("id") or "").lower()
        style = el.get("style") or ""
        separator = ident in _QUOTE_IDS or (
            el.tag in ("div", "hr", "p") and _BORDER_TOP.search(style) is not None
        )
        if separator and not FORWARD.match(el.text_content().strip()):
            _quote_from(el)
            return


def _quote_from(el: Any) -> None:
    """Mark ``el`` and everything after it in document order as quoted."""
    el.set("data-mailbot-quote", "1")
    node = el
    while node is not None:
        for sibling in node.itersiblings():
            if isinstance(sibling.tag, str):
                sibling.set("data-mailbot-quote", "1")
        node = node.getparent()


def _render(el: Any, out: list[str], quoted: bool) -> None:
    if quoted:  # inside a quote nothing starts another: the common case, kept cheap
        _render_content(el, out, quoted, _UNREAD)
        tail = el.tail
        if tail:
            out.append(_squash(tail))
        return
    tag = el.tag if isinstance(el.tag, str) else ""
    classes = el.get("class")
    if tag != "blockquote" and el.get("data-mailbot-quote") != "1":
        ident = el.get("id")
        if (classes is None and ident is None) or not _quote_container(classes, ident):
            # most elements: neither a quote nor a blockquote (what _is_quote tells at once)
            _render_content(el, out, quoted, classes)
            tail = el.tail
            if tail:
                out.append(_squash(tail))
            return
    starts_quote = el.get("data-mailbot-quote") == "1" or (
        _is_quote(el, out) and not FORWARD.match(el.text_content().strip())
    )
    if starts_quote:
        inner: list[str] = []
        _render_content(el, inner, True, classes)
        text = _tidy("".join(inner))
        if text:
            out.append("\n" + "\n".join("> " + line for line in text.split("\n")) + "\n")
        if el.tail:
            out.append(_squash(el.tail))
        return
    if tag == "blockquote":
        inner = []
        _render_content(el, inner, False, classes)
        text = _tidy("".join(inner))
        if text:
            out.append(_SOFT + "\n".join("| " + line for line in text.split("\n")) + _SOFT)
        if el.tail:
            out.append(_squash(el.tail))
        return
    _render_content(el, out, quoted, classes)
    if el.tail:
        out.append(_squash(el.tail))


_UNREAD = object()  # _render_content's "classes": not read yet


def _render_content(el: Any, out: list[str], quoted: bool, classes: Any) -> None:
    tag = el.tag
    if not isinstance(tag, str):
        tag = ""
    if tag == "br":
        out.append("\n")
        return
    if tag == "pre":
        out.append("\n" + el.text_content() + "\n")
        return
    if classes is _UNREAD:
        classes = el.get("class")
    outlook = classes is not None and "msonormal" in classes.lower()
    text = el.text
    if tag in ("p", "div") and not (text and not text.isspace()):
        content = el.text_content()  # only here, and only when its own text is blank
        if not content.strip() and ("\xa0" in content or outlook):
            out.append(_SOFT + "\n" + _SOFT)  # Outlook's empty line: a paragraph of &nbsp;
            return
    # Outlook's paragraphs are lines: its CSS gives p.MsoNormal no margin.
    para = tag in _PARA and not outlook
    block = tag in _SOFT_TAGS
    if para:
        out.append(_PARA_BREAK)
    elif block:
        out.append(_SOFT)
    if tag == "li":
        out.append("- ")
    if tag in _CELLS:
        # A table is read row by row: cells of a row on one line, " | " between them.
        previous = el.getprevious()
        while previous is not None and not isinstance(previous.tag, str):
            previous = previous.getprevious()
        if previous is not None and previous.tag in _CELLS:
            out.append(" | ")
    if text:
        out.append(_squash(text))
    if quoted:  # _render's quoted case, without a call per element
        for child in el:
            _render_content(child, out, True, _UNREAD)
            tail = child.tail
            if tail:
                out.append(_squash(tail))
    else:
        for child in el:
            _render(child, out, False)
    if para:
        out.append(_PARA_BREAK)
    elif block:
        out.append(_SOFT)


_SOFT = "\x00"  # a block boundary: one line break, however many blocks meet
_PARA_BREAK = "\x01"  # a paragraph boundary: a blank line
_BREAKS = re.compile(r"[\x00\x01\n][\x00\x01\n \t]*")


_ANY_BREAK = re.compile(r"[\x00\x01\n]")
_LINE_BREAK_OR_NBSP = re.compile("[\x00\x01\n\xa0]")
_BLANKS = re.compile(r"[ \t]")
_HARD = re.compile(r"(?<=\x00)\n(?=\x00)|\n(?![\x00\x01])")


def _breaks(match: re.Match[str]) -> str:
    run = match.group()
    # The same short runs come back on every line; a long one is not kept (memory).
    return _short_run(run) if len(run) <= 16 else _run_breaks(run)


def _run_breaks(run: str) -> str:
    """Browsers' rule: blocks meeting make one break; a <br> ending a block adds none."""
    run = _BLANKS.sub("", run)
    hard = len(_HARD.findall(run))
    count = hard + (1 if _SOFT in run else 0)
    if _PARA_BREAK in run:
        count = max(count, 2)
    return "\n" * max(count, 1)


_short_run = functools.lru_cache(maxsize=256)(_run_breaks)


def _tidy(text: str) -> str:
    core = text.strip("\x00\x01\n \t")
    if _LINE_BREAK_OR_NBSP.search(core) is None:
        # One line between breaks (a blockquote's "quote 3"): the rules below make it this.
        return core.strip()
    text = _BREAKS.sub(_breaks, text.replace("\xa0", " "))
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _squash(text: str) -> str:
    """HTML white space rules: any run of white space is one space."""
    core = " ".join(text.split())
    if core == text:  # nothing to squash (also ""): the common case
        return text
    if not core:
        return " " if text else ""
    return (" " if text[0].isspace() else "") + core + (" " if text[-1].isspace() else "")
