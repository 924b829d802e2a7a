"""Bounded work per message: cheap, linear checks on the raw bytes, before anything parses them.

Two pure functions answer ``None`` (go on) or a :class:`Refusal` (a machine code and a reason
in plain words that names the limit):

- :func:`screen_headers` reads the top-level header section only, and never more than
  ``max_header_bytes + 1`` of it: cheap enough for the SMTP event loop at DATA time.
- :func:`screen_structure` walks the whole message once, without parsing it: MIME nesting,
  part count, and the header limits of every part. It runs in the analyser process.

Header sections end where the standard library's feed parser ends them (the first line that
is neither a field nor a continuation), and boundaries are found the way it finds them
(:func:`boundary_of` is also what :mod:`mailbot.parse` gives its parser), so what the screen
lets through is what ``parse`` can read in bounded time. Addresses are counted as an upper
bound: commas + 1 or ``@`` signs, whichever is more, per address header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from email.utils import decode_params
from typing import TYPE_CHECKING

from mailbot.decoding import ENCODED_WORD_START, decode_bytes, parseparam, unquote

if TYPE_CHECKING:
    from mailbot.config import Settings


@dataclass(frozen=True)
class Limits:
    """The per-message limits of :class:`~mailbot.config.Settings` (same names, same
    defaults), on their own so the screen and the parser can be used without settings."""

    max_header_bytes: int = 256 * 1024
    max_header_count: int = 1000
    max_structured_header_bytes: int = 16 * 1024
    max_encoded_words: int = 1000
    max_addresses: int = 1000
    max_mime_depth: int = 30
    max_mime_parts: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Refusal:
    code: str  # header_too_large, too_many_headers, ..., mime_too_deep, too_many_parts
    reason: str


# RFC 2046 allows 70 characters; a longer one is ignored (the multipart is read as one
# part), else every part could make the parser compile a regex of many kilobytes.
MAX_BOUNDARY = 200

ADDRESS_HEADERS = frozenset({b"from", b"to", b"cc", b"bcc", b"reply-to", b"sender"})
STRUCTURED_HEADERS = ADDRESS_HEADERS | {
    b"content-type",
    b"content-disposition",
    b"content-transfer-encoding",
    b"message-id",
    b"in-reply-to",
    b"references",
    b"date",
}

# Header lines as the feed parser sees them: "From " (mbox), "name:", or a continuation.
_HEADER_LINES = re.compile(rb"(?:(?:From |[\x21-\x39\x3b-\x7e]*:|[ \t])[^\r\n]*(?>\r\n|\r|\n|\Z))*")
_FIELD_START = re.compile(rb"\n(?![ \t])")
_FIELD_NAMES: dict[bytes, re.Pattern[bytes]] = {
    name: re.compile(rb"[\r\n]" + re.escape(name) + rb":", re.IGNORECASE)
    for name in (b"content-type", b"message-id")
}
_FIELD_END = re.compile(rb"(?>\r\n|\r|\n)(?![ \t])|\Z")
_BLANK_LINE = re.compile(rb"(?>\r\n|\r|\n)(?>\r\n|\r|\n)")


def header_end(raw: bytes, start: int = 0, stop: int | None = None) -> int:
    """Where the header lines that begin at ``start`` end, looking no further than ``stop``."""
    m = _HEADER_LINES.match(raw, start, len(raw) if stop is None else stop)
    return m.end() if m else start  # it always matches, if only the empty string


def body_start(raw: bytes, end: int) -> int:
    """After the empty line that separates headers from body, if there is one."""
    if raw.startswith(b"\r\n", end):
        return end + 2
    return end + 1 if raw[end : end + 1] in (b"\r", b"\n") else end


def first_field(block: bytes, name: bytes) -> bytes | None:
    """The raw value of the first ``name`` field (content-type or message-id) in a header
    section, continuation lines included: the field the feed parser's Message.get returns,
    found in C instead of line by line."""
    if block[: len(name) + 1].lower() == name + b":":
        start = len(name) + 1
    else:
        m = _FIELD_NAMES[name].search(block)
        if m is None:
            return None
        start = m.end()
    end = _FIELD_END.search(block, start)
    return block[start : end.start() if end else len(block)]


def screen_headers(raw: bytes, limits: Limits) -> Refusal | None:
    end = header_end(raw, 0, limits.max_header_bytes + 1)
    if end > limits.max_header_bytes:
        return _too_large(limits, "")
    return _check_block(raw[:end], limits, "")


def screen_structure(raw: bytes, limits: Limits) -> Refusal | None:
    try:
        _Scan(raw, limits).run()
    except _Refused as refused:
        return refused.refusal
    return None


def big_leaves(raw: bytes, limits: Limits, min_size: int) -> list[tuple[int, int]]:
    """Where the bodies of leaf parts of ``min_size`` octets or more lie (start, end), as the
    feed parser would cut them: parts of a multipart, not text, not inside an attached
    message, each ended by a boundary. [] for a message over a limit."""
    scan = _Scan(raw, limits, min_size)
    try:
        scan.run()
    except _Refused:
        return []
    return scan.leaves


def boundary_of(content_type: str) -> str | None:
    """The boundary parameter as ``Message.get_boundary`` reads it, in linear time, never
    raising; None when absent, unreadable or longer than :data:`MAX_BOUNDARY`."""
    try:
        pairs = []
        for item in parseparam(content_type):
            name, sep, value = item.partition("=")
            pairs.append((name.strip(), value.strip()) if sep else (item.strip(), ""))
        for key, param in decode_params(pairs):
            if key.lower() != "boundary":
                continue
            if isinstance(param, tuple):  # RFC 2231: decoded with our safe charset rules
                raw = bytes(unquote(param[2]), "raw-unicode-escape")
                found = decode_bytes(raw, param[0]).rstrip()
            else:
                found = unquote(param).rstrip()
            return found if len(found) <= MAX_BOUNDARY else None
        return None
    except Exception:  # noqa: BLE001 - odd RFC 2231 sections make decode_params raise
        return None


def _too_large(limits: Limits, where: str) -> Refusal:
    return Refusal(
        "header_too_large",
        f"the header section{where} is larger than {limits.max_header_bytes} bytes"
        " (max_header_bytes)",
    )


def _check_block(block: bytes, limits: Limits, where: str) -> Refusal | None:
    """The limits of one header section (its size is checked by the caller)."""
    text = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not text:
        return None
    lines = text.count(b"\n") + (not text.endswith(b"\n"))
    folded = text.count(b"\n ") + text.count(b"\n\t") + (text[:1] in (b" ", b"\t"))
    if lines - folded > limits.max_header_count:
        return Refusal(
            "too_many_headers",
            f"more than {limits.max_header_count} header fields{where} (max_header_count)",
        )
    addresses = 0
    for field in _FIELD_START.split(text):
        name, colon, value = field.partition(b":")
        name = name.strip().lower()
        if not colon:
            continue
        if name.startswith(b"resent-"):
            name = name[7:]
        if name in STRUCTURED_HEADERS:
            if len(value) - value.count(b"\n") > limits.max_structured_header_bytes:
                shown = field.partition(b":")[0].strip()[:40].decode("ascii", "replace")
                return Refusal(
                    "structured_header_too_large",
                    f"the {shown} header{where} is longer than"
                    f" {limits.max_structured_header_bytes} bytes (max_structured_header_bytes)",
                )
            if name in ADDRESS_HEADERS:
                addresses += max(value.count(b",") + 1, value.count(b"@"))
    if addresses > limits.max_addresses:
        return Refusal(
            "too_many_addresses",
            f"more than {limits.max_addresses} addresses in the address headers{where}"
            " (max_addresses)",
        )
    if len(ENCODED_WORD_START.findall(text)) > limits.max_encoded_words:
        return Refusal(
            "too_many_encoded_words",
            f"more than {limits.max_encoded_words} encoded words (RFC 2047) in the"
            f" headers{where} (max_encoded_words)",
        )
    return None


class _Refused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.code)
        self.refusal = refusal


@dataclass
class _Open:
    """A multipart whose closing boundary has not been seen yet."""

    boundary: bytes
    depth: int
    digest: bool  # in multipart/digest a part without Content-Type is message/rfc822
    in_message: bool = False  # inside an attached message (message/rfc822)


class _Scan:
    """One pass over a message, as the feed parser would walk it, with no tree built: a stack
    of open boundaries; the next line that is one of them is found (the outermost wins, as
    the parser's end-of-part checks do); after each separator a part's header section is
    read and checked."""

    def __init__(self, raw: bytes, limits: Limits, min_leaf: int | None = None) -> None:
        self.raw = raw
        self.limits = limits
        self.min_leaf = min_leaf  # None: leaves are not noted
        self.leaf: int | None = None  # where the body of the open leaf part starts
        self.leaves: list[tuple[int, int]] = []
        self.stack: list[_Open] = []
        self.parts = 0
        self.report_from: int | None = None  # the body of an open message/delivery-status
        self.finders: dict[tuple[bytes, ...], re.Pattern[bytes]] = {}

    def run(self) -> None:
        pos = self.entity(0, 0, digest=False)
        while self.stack:
            hit = self.next_boundary(pos)
            if hit is None:
                break
            at, line_end, level, closing = hit
            self.end_report(at)
            self.end_leaf(at)
            opened = self.stack[level]
            del self.stack[level if closing else level + 1 :]
            if closing:
                pos = line_end
                continue
            self.count_part()
            start = body_start(self.raw, line_end)
            pos = self.entity(start, opened.depth + 1, opened.digest, opened.in_message)
        self.end_report(len(self.raw))

    def end_leaf(self, at: int) -> None:
        """The open leaf ends before the line break that belongs to the boundary line."""
        start, self.leaf = self.leaf, None
        if start is None or self.min_leaf is None:
            return
        end = at - 2 if self.raw.startswith(b"\r\n", at - 2) else at - 1
        if end - start >= self.min_leaf:
            self.leaves.append((start, end))

    def count_part(self, n: int = 1) -> None:
        self.parts += n
        if self.parts > self.limits.max_mime_parts:
            raise _Refused(
                Refusal(
                    "too_many_parts",
                    f"more than {self.limits.max_mime_parts} MIME parts (max_mime_parts)",
                )
            )

    def entity(self, pos: int, depth: int, digest: bool, in_message: bool = False) -> int:
        """Read the header section of a message or part at ``pos``; returns where its body
        starts. A message/* part holds another message: read on into it."""
        limits = self.limits
        leaf_ok = depth > 0
        while True:
            if depth > limits.max_mime_depth:
                raise _Refused(
                    Refusal(
                        "mime_too_deep",
                        f"MIME parts are nested more than {limits.max_mime_depth} levels deep"
                        " (max_mime_depth)",
                    )
                )
            where = " of a MIME part" if depth else ""
            end = header_end(self.raw, pos, pos + limits.max_header_bytes + 1)
            if end - pos > limits.max_header_bytes:
                raise _Refused(_too_large(limits, where))
            end = self.cut_at_boundary(pos, end)
            refusal = _check_block(self.raw[pos:end], limits, where)
            if refusal is not None:
                raise _Refused(refusal)
            body = body_start(self.raw, end)
            ctype, boundary = _content_type(self.raw[pos:end], digest)
            if ctype == "message/delivery-status":
                self.report_from = body
                return body
            if ctype.startswith("message/"):
                self.count_part()
                pos, depth, digest, in_message = body, depth + 1, False, True
                continue
            if ctype.startswith("multipart/") and boundary is not None:
                opened = _Open(boundary, depth, ctype == "multipart/digest", in_message)
                self.stack.append(opened)
            elif leaf_ok and not in_message and not ctype.startswith(("text/", "multipart/")):
                self.leaf = body
            return body

    def cut_at_boundary(self, pos: int, end: int) -> int:
        """A boundary line ends a header section even when it looks like a field."""
        if not self.stack or pos == 0:
            return end
        for m in self.finder().finditer(self.raw, pos - 1, end):
            if self.level_of(m.group(1)) is not None:
                return m.start() + 1
        return end

    def next_boundary(self, pos: int) -> tuple[int, int, int, bool] | None:
        for m in self.finder().finditer(self.raw, max(pos - 1, 0)):
            found = self.level_of(m.group(1))
            if found is not None:
                return m.start() + 1, m.end(), *found
        return None

    def finder(self) -> re.Pattern[bytes]:
        """Lines that are one of the open boundaries (then maybe "--", blanks): searched in
        C, so a body of lines that only look like boundaries costs no Python loop."""
        key = tuple(sorted({opened.boundary for opened in self.stack}, key=len, reverse=True))
        found = self.finders.get(key)
        if found is None:
            either = b"|".join(re.escape(boundary) for boundary in key)
            found = re.compile(rb"[\r\n]--((?:" + either + rb")(?:--)?[ \t]*)(?=[\r\n]|\Z)")
            self.finders[key] = found
        return found

    def level_of(self, line: bytes) -> tuple[int, bool] | None:
        """(stack level, closing?) of a line that began with ``--``, outermost first."""
        text = line.rstrip(b" \t")
        closing = text[:-2] if text.endswith(b"--") else None
        for level, opened in enumerate(self.stack):
            if text == opened.boundary:
                return level, False
            if closing == opened.boundary:
                return level, True
        return None

    def end_report(self, end: int) -> None:
        """message/delivery-status: each block of fields is a part of its own."""
        if self.report_from is not None:
            start, self.report_from = self.report_from, None
            self.count_part(1 + len(_BLANK_LINE.findall(self.raw, start, max(start, end))))


def _content_type(block: bytes, digest: bool) -> tuple[str, bytes | None]:
    """(type, boundary) of one header section, as the feed parser's Message reads them."""
    raw_value = first_field(block, b"content-type")
    if raw_value is None:
        return ("message/rfc822" if digest else "text/plain"), None
    # compat32 shows 8-bit bytes of a header as U+FFFD: such a boundary never matches
    value = raw_value.decode("ascii", "replace").lstrip(" \t")
    ctype = value.partition(";")[0].strip().lower()
    if ctype.count("/") != 1:
        return "text/plain", None
    if not ctype.startswith("multipart/"):
        return ctype, None
    boundary = boundary_of(value)
    if boundary is None:
        return ctype, None
    try:
        return ctype, boundary.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return ctype, None
