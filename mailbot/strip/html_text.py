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
from collections.abc import Iterable
from typing import Any

from mailbot.strip.quotes import FORWARD, is_attribution

_BLOCK = {
    "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "hr", "pre", "ul", "ol",
    "dl", "dt", "dd", "section", "article", "header", "footer", "center", "address",
}  # fmt: skip
_CLASSED = {"p", "div"}  # the tags whose class counts: Outlook's MsoNormal
_CELLS = {"td", "th"}
_QUOTE_CLASSES = ("gmail_quote", "yahoo_quoted", "moz-cite-prefix", "protonmail_quote")
_QUOTED = "data-mailbot-quote"
_QUOTE_CLASS = re.compile("|".join(map(re.escape, _QUOTE_CLASSES)))  # any, anywhere in class
_LAST = "data-mailbot-last-quote"
_QUOTE_IDS = ("divrplyfwdmsg", "appendonsend", "mail-editor-reference-message-container")
_BORDER_TOP = re.compile(r"border-top\s*:\s*(solid|[^;]*\bsolid\b)", re.I)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def html_to_text(html: str) -> str:
    """Readable text from an HTML body; the quoted history as ``>`` lines."""
    if not html.strip():
        return ""
    # They show nothing, and lxml refuses them in any text set from Python: they go first.
    html = _CONTROL.sub("", html)
    from lxml import etree
    from lxml import html as lxml_html

    parser = _parser()
    try:
        try:
            tree = lxml_html.fromstring(html, parser=parser)
        except ValueError:  # a str with an XML encoding declaration: lxml wants bytes
            tree = lxml_html.fromstring(html.encode("utf-8"), parser=parser)
    except Exception:  # noqa: BLE001 - lxml raises several types on hostile markup
        return ""
    # What shows nothing goes, its tail kept, in one pass in C: dropping them one by one
    # joined each tail to the text before it, 2 s for 20,000 styled lines. (Comments never
    # get here: the parser leaves them out.)
    etree.strip_elements(tree, "script", "style", "head", "title", with_tail=False)
    _mark_outlook_history(tree)
    quotes = tree.xpath("//blockquote")
    if quotes:
        # The last outer blockquote holds the last blockquote (or is it): climb, don't test all.
        outer = quotes[-1]
        for ancestor in outer.iterancestors("blockquote"):
            outer = ancestor
        outer.set(_LAST, "1")
    out: list[str] = []
    _walk((tree,), out, False, _previous_tag(tree))
    return _tidy("".join(out))


@functools.cache
def _parser() -> Any:
    """lxml.html's parser, its element classes chosen in C: lxml.html's own parser asks a
    Python method for the class of every element it hands out (a sixth of the time of a
    large body). The same classes, but for forms' (form, input, select, textarea, label:
    only their form helpers differ, which nothing here calls)."""
    from lxml import etree
    from lxml import html as lxml_html

    # Comments left out here, never dropped afterwards: dropped one by one, each joined its
    # tail to the text before it, which is quadratic in their number (50,000 took 1.3 s).
    parser = etree.HTMLParser(remove_comments=True)
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


@functools.lru_cache(maxsize=1024)  # the same few classes come back on every element
def _quote_container(classes: str | None, ident: str | None) -> bool:
    """A client's quote container, by its class or id."""
    return _QUOTE_CLASS.search((classes or "").lower()) is not None or (
        (ident or "").lower() in _QUOTE_IDS
    )


def _line_above(pieces: list[str], whole: bool) -> str | None:
    """The last line with text in ``pieces`` ("" if none). Unless ``pieces`` is ``whole``,
    None where no break precedes that line in them: pieces before may belong to it."""
    text = "".join(pieces).replace(_SOFT, "\n").replace(_PARA_BREAK, "\n").rstrip()
    if not text:
        return "" if whole else None
    start = text.rfind("\n")  # the line's text ends the string now: it starts after a break
    if start < 0 and not whole:
        return None
    return " ".join(text[start + 1 :].split())


def _mark_outlook_history(tree: Any) -> None:
    """Outlook has no quote element: history starts at a separator and runs to the end."""
    # Only elements with an id or a style can be a separator. lxml finds them in one pass,
    # through their attributes: a predicate on every element costs ten times as much.
    for el in tree.xpath("(descendant-or-self::*/@id | descendant-or-self::*/@style)/.."):
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
    el.set(_QUOTED, "1")
    node = el
    while node is not None:
        for sibling in node.itersiblings():
            if isinstance(sibling.tag, str):
                sibling.set(_QUOTED, "1")
        node = node.getparent()


def _walk(
    children: Iterable[Any], out: list[str], quoted: bool, prev: str = "", plain: Any = None
) -> None:
    """Render ``children`` and their tails into ``out``; ``prev`` is the tag before the first.

    One loop over siblings, the rules inline: a Python call per element cost as much as the
    work (iterwalk's flat pass measured slower still). Only an element with children costs a
    call. Inside a quote nothing starts another, so nothing is tested there; ``plain`` is an
    element already tested and found no quote.
    """
    append = out.append
    for el in children:
        tag = el.tag
        if tag.__class__ is not str:
            tag = ""  # not an element: its text, no markup
        classes = None
        if quoted:
            if tag in _CLASSED:  # the only tags whose class counts inside a quote
                classes = el.get("class")
        elif tag == "blockquote" or not tag or el.items():
            # Only a blockquote or an element with attributes can start a quote.
            classes = el.get("class")
            if el is not plain and (
                tag == "blockquote"
                or el.get(_QUOTED) == "1"
                or _quote_container(classes, el.get("id"))
            ):
                _quote_or_plain(el, out, tag, prev)
                prev = tag or prev
                continue
        text = el.text
        if tag == "br":
            append("\n")
        elif tag == "pre":
            append("\n" + el.text_content() + "\n")
        elif tag in _CLASSED and not (text and not text.isspace()) and _blank(el, classes):
            append(_SOFT + "\n" + _SOFT)  # Outlook's empty line: a paragraph of &nbsp;
        else:
            if tag in _CLASSED:
                # Outlook's paragraphs are lines: its CSS gives p.MsoNormal no margin.
                para = tag == "p" and (classes is None or "msonormal" not in classes.lower())
                close = _PARA_BREAK if para else _SOFT
            elif tag in _CELLS:
                close = None
                if prev in _CELLS:  # a row on one line, " | " between its cells
                    append(" | ")
            else:
                close = _CLOSE.get(tag)
            if close:
                append(close)
                if tag == "li":
                    append("- ")
            if text:
                append(_squash(text))
            if len(el):
                _walk(el, out, quoted)
            if close:
                append(close)
        tail = el.tail
        if tail:
            append(_squash(tail))
        prev = tag or prev


def _blank(el: Any, classes: str | None) -> bool:
    """A p or div with no text but white space: Outlook's empty line if &nbsp; or MsoNormal."""
    content = el.text_content()
    if content.strip():
        return False
    return "\xa0" in content or (classes is not None and "msonormal" in classes.lower())


def _quote_or_plain(el: Any, out: list[str], tag: str, prev: str) -> None:
    """A quote candidate with its tail: history as ``>`` lines, a blockquote of the writer's
    own as ``|`` lines, else (a forward in a quote container) plain content."""
    quote = el.get(_QUOTED) == "1" or (
        _is_quote(el, out) and not FORWARD.match(el.text_content().strip())
    )
    if not quote and tag != "blockquote":
        _walk((el,), out, False, prev, plain=el)
        return
    inner: list[str] = []
    _walk((el,), inner, quote, prev, plain=el)
    tail = el.tail
    if tail:
        inner.pop()  # the tail follows the block, outside it
    text = _tidy("".join(inner))
    if text and quote:
        out.append("\n" + "\n".join("> " + line for line in text.split("\n")) + "\n")
    elif text:
        out.append(_SOFT + "\n".join("| " + line for line in text.split("\n")) + _SOFT)
    if tail:
        out.append(_squash(tail))


def _previous_tag(el: Any) -> str:
    """The tag of the element before ``el`` among its siblings ("" if none)."""
    previous = el.getprevious()
    while previous is not None and not isinstance(previous.tag, str):
        previous = previous.getprevious()
    return "" if previous is None else previous.tag


_SOFT = "\x00"  # a block boundary: one line break, however many blocks meet
_PARA_BREAK = "\x01"  # a paragraph boundary: a blank line
_CLOSE = dict.fromkeys(_BLOCK | {"blockquote"}, _SOFT)  # a line break before and after
_BREAKS = re.compile(r"([\x00\x01\n][\x00\x01\n \t]*)")  # captured: split keeps the runs
_BLANK_LINES = re.compile(r"\n{3,}")


_LINE_BREAK_OR_NBSP = re.compile("[\x00\x01\n\xa0]")
_BLANKS = re.compile(r"[ \t]")
_HARD = re.compile(r"(?<=\x00)\n(?=\x00)|\n(?![\x00\x01])")


def _run_breaks(run: str) -> str:
    """Browsers' rule: blocks meeting make one break; a <br> ending a block adds none."""
    run = _BLANKS.sub("", run)
    hard = len(_HARD.findall(run))
    count = hard + (1 if _SOFT in run else 0)
    if _PARA_BREAK in run:
        count = max(count, 2)
    return "\n" * max(count, 1)


def _tidy(text: str) -> str:
    core = text.strip("\x00\x01\n \t")
    if _LINE_BREAK_OR_NBSP.search(core) is None:
        # One line between breaks (a blockquote's "quote 3"): the rules below make it this.
        return core.strip()
    parts = _BREAKS.split(text.replace("\xa0", " "))
    # Every other part is a run of breaks. The same few runs come back on every line: the
    # rule once per distinct run, then a lookup (no call per run, no cache kept after).
    runs = parts[1::2]
    rule = {run: _run_breaks(run) for run in set(runs)}
    parts[1::2] = map(rule.__getitem__, runs)
    text = "\n".join([line.strip() for line in "".join(parts).split("\n")])
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def _squash(text: str) -> str:
    """HTML white space rules: any run of white space is one space."""
    core = " ".join(text.split())
    if core == text:  # nothing to squash (also ""): the common case
        return text
    if not core:
        return " " if text else ""
    return (" " if text[0].isspace() else "") + core + (" " if text[-1].isspace() else "")
