"""Structured header values, read without the new email policy's header objects (quadratic
on hostile input, and they raise): address lists, with what makes a From untrustworthy,
message ids and dates. Linear, never raising; used by :mod:`mailbot.parse`.
"""

from __future__ import annotations

import re
from email.utils import getaddresses, parsedate_to_datetime

from mailbot.decoding import Budget, decode_words, one_line
from mailbot.screen import Limits

Pair = tuple[str, str]  # (display name, address)


def from_addresses(
    values: list[str], notes: dict[str, None], budget: Budget, limits: Limits
) -> list[Pair]:
    """Every address of every From header, and what the sender checks must know (as
    defects): a From that is not exactly one readable mailbox cannot name the author."""
    if len(values) > 1:
        notes["MultipleFromHeaders"] = None
    group = unparseable = False
    every: list[Pair] = []
    for value in values:
        text = _unfold(value)
        found, complete = _addresses(text, notes, budget, limits)
        every.extend(found)
        shape = _Shape(text)
        group = group or shape.group
        readable = [a for a in found if _MAILBOX.fullmatch(a[1])]
        if not (complete and shape.balanced and found and len(readable) == len(found)):
            unparseable = True
        elif len(found) != shape.ats:  # an "@" that did not end up in an address
            unparseable = True
    if group:
        notes["FromGroupSyntax"] = None
    if unparseable:
        notes["FromUnparseable"] = None
    return every


_MAILBOX = re.compile(r'(?:"[^"]*"|[^@\s"]+)@[^@\s"]+')
# getaddresses recurses once per "(" of a comment and per ":" of a group: past these counts
# (never seen in real mail) the addresses are picked out without it.
_MAX_NESTING_MARKS = 30
_ROUGH_SPLIT = re.compile(r'[\s<>(),;:"\[\]]+')


def _unfold(value: str) -> str:
    return value.replace("\r", "").replace("\n", "")


def address_list(
    values: list[str], notes: dict[str, None], budget: Budget, limits: Limits
) -> list[Pair]:
    """(display name, address) of every address in these header values."""
    found: list[Pair] = []
    for value in values:
        found.extend(_addresses(_unfold(value), notes, budget, limits)[0])
    return found


def _addresses(
    text: str, notes: dict[str, None], budget: Budget, limits: Limits
) -> tuple[list[Pair], bool]:
    """(addresses, read completely?) of one address header."""
    if (
        len(text) > limits.max_structured_header_bytes
        or text.count("(") > _MAX_NESTING_MARKS
        or text.count(":") > _MAX_NESTING_MARKS
    ):
        pairs = [("", word) for word in _ROUGH_SPLIT.split(text) if _MAILBOX.fullmatch(word)]
        complete = False
    else:
        pairs = getaddresses([text])
        complete = all(address for _, address in pairs)
        pairs = [(name, address) for name, address in pairs if name or address]
    if len(pairs) > limits.max_addresses:
        notes["TooManyAddresses"] = None
        pairs, complete = pairs[: limits.max_addresses], False
    found = [(one_line(decode_words(n, budget, notes)), one_line(a)) for n, a in pairs]
    return found, complete


class _Shape:
    """What getaddresses does not say about an address header: group syntax (a ":" outside
    quotes, comments and angle brackets), unbalanced quoting, and how many "@" stand outside
    quotes and comments (each should be one address)."""

    _TOKEN = re.compile(r'\\.|[()"<>:@]|[^\\()"<>:@]+', re.S)

    def __init__(self, text: str) -> None:
        self.group = False
        self.ats = 0
        quoted, comment, angle, stray = False, 0, 0, False
        for m in self._TOKEN.finditer(text):
            token = m.group()
            if token[0] == "\\":
                continue
            if quoted:
                quoted = token != '"'
            elif comment:
                comment += {"(": 1, ")": -1}.get(token, 0)
            elif token == '"':
                quoted = True
            elif token == "(":
                comment = 1
            elif token == ")":
                stray = True
            elif token == "<":
                angle += 1
            elif token == ">":
                stray, angle = stray or angle == 0, max(angle - 1, 0)
            elif token == ":" and not angle:
                self.group = True
            elif token == "@":
                self.ats += 1
        self.balanced = not (quoted or comment or angle or stray)


_MSG_ID = re.compile(r"<([^<>\s\x00-\x1f\x7f]{1,900})>")
_WORDS = re.compile(r"[\s,<>]+")


def msg_ids(value: str) -> list[str]:
    """``<id>`` wherever it stands; failing that, bare ``local@domain`` words (some clients
    drop the brackets). Anything else (``12345``) is not an id."""
    ids = [f"<{found}>" for found in _MSG_ID.findall(value)]
    if ids or "@" not in value:
        return ids
    return [
        f"<{word}>"
        for word in _WORDS.split(value)
        if "@" in word and len(word) <= 900 and word.isprintable()
    ]


def date(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value[:256]).isoformat()
    except Exception:  # noqa: BLE001 - TypeError, ValueError, IndexError, OverflowError...
        return None
