"""Redaction: what people and programs are shown instead of a live reply token or VERP id.

A reply address is a credential (README, *Security model*), and a ``bounces+<id>`` return path
makes a live recipient; neither is ever shown by the API or the CLI. Each is replaced by a
short fingerprint, ``reply+…4f2a1b@domain``: the first hex digits of the token's SHA-256,
which is a prefix of ``reply_tokens.token_hash`` (an operator finds the row with
``token_hash LIKE '4f2a1b%'``) and tells nothing about the token itself.

Matching is case-insensitive (some senders upper-case addresses) and also finds the forms
text is shown in: ``reply%2B…`` (URLs), ``reply=2B…`` (quoted-printable, RFC 2047 Q words)
and a bare token (a person may paste just that).

>>> redact({"to": ["REPLY+" + "a" * 32 + "@x.test"]})
{'to': ['reply+…3ba3f5@x.test']}
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from mailbot.addresses import BOUNCE_PREFIX, REPLY_PREFIX
from mailbot.store.tokens import hash_token

FINGERPRINT_HEX = 6
MARK = "…"  # not in any token alphabet: a redacted value is never redacted again

# All matching is on bytes lower-cased by bytes.lower(), which touches ASCII only and keeps
# every offset: the patterns then start with a literal, which re finds at memchr speed, and
# a 25 MB message is redacted in tens of milliseconds, not seconds, on the event loop.
_PLUS = rb"(?:\+|%2b|=2b|=3d2b)"  # the last: a Q-encoded "=2B" quoted-printable again
_PREFIXED_TOKEN = re.compile(rb"reply" + _PLUS + rb"([a-z2-7]{32})")
_VERP = re.compile(rb"bounces" + _PLUS + rb"([0-9a-z]{8,})")
# A token alone: exactly 32 characters of its alphabet standing as a word. Words are found
# on a mask (letters and digits → "a", anything else → " ") with bytes.find, no regex.
_MASK = bytes(0x61 if chr(b).isascii() and chr(b).isalnum() else 0x20 for b in range(256))
_RUN = b" " + b"a" * 32 + b" "
_TOKEN_WORD = re.compile(rb"[a-z2-7]{32}")
# One letter past ``f`` keeps hex (Message-IDs we make are uuid hex) from looking like one.
_NOT_HEX = re.compile(rb"[g-z]")
_MARK = MARK.encode()

Replace = Callable[[bytes], bytes]


def fingerprint(token: str) -> str:
    """The short, non-reversible name of a token: a prefix of its stored hash."""
    return hash_token(token.lower())[:FINGERPRINT_HEX]


def _token_mark(token: bytes) -> bytes:
    return _MARK + fingerprint(token.decode("ascii")).encode()


def _verp_mark(verp_id: bytes) -> bytes:
    return _MARK + hashlib.sha256(verp_id).hexdigest()[:FINGERPRINT_HEX].encode()


def redact_text(text: str) -> str:
    """``text`` with every reply token and VERP id replaced by its fingerprint."""
    if not text:
        return text
    data = text.encode("utf-8", "surrogatepass")
    done = redact_bytes(data)
    return text if done is data else done.decode("utf-8", "surrogatepass")


def redact(value: Any) -> Any:
    """Any JSON-able value with every string in it (dict keys too) redacted."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact(k): redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def redact_bytes(data: bytes) -> bytes:
    """Bytes (stored mail, UTF-8 text) with their tokens replaced; the very object back when
    there was nothing to replace."""
    # Written-out addresses first: a bare token after "reply%2B" is no word of its own.
    return _bare(redact_addresses(data))


def redact_addresses(data: bytes) -> bytes:
    """Only what is written out as a reply address or return path (``reply+…``,
    ``bounces+…``, in any case and URL or QP form): for bytes that are not text, such as an
    attached message sent as octet-stream, where a bare 32-letter word may be anything."""
    prefix = REPLY_PREFIX.encode()
    data = _prefixed(data, _PREFIXED_TOKEN, lambda t: prefix + _token_mark(t))
    return _prefixed(data, _VERP, lambda v: BOUNCE_PREFIX.encode() + _verp_mark(v))


def _prefixed(data: bytes, pattern: re.Pattern[bytes], mark: Replace) -> bytes:
    parts: list[bytes] = []
    last = 0
    for found in pattern.finditer(data.lower()):
        parts += [data[last : found.start()], mark(found[1])]
        last = found.end()
    return b"".join([*parts, data[last:]]) if parts else data


def _bare(data: bytes) -> bytes:
    mask = b" " + data.translate(_MASK) + b" "  # mask[i + 1] is data[i]
    parts: list[bytes] = []
    last = 0
    at = mask.find(_RUN)
    while at >= 0:
        word = data[at : at + 32].lower()  # the run starts at mask[at + 1], data[at]
        if _TOKEN_WORD.fullmatch(word) and _NOT_HEX.search(word):
            parts += [data[last:at], _token_mark(word)]
            last = at + 32
        at = mask.find(_RUN, at + 32)  # the run's closing space may open the next one
    return b"".join([*parts, data[last:]]) if parts else data


# user:password@ in any URL: what a database or relay URL carries.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@")
_SECRET_SETTINGS = ("MAILBOT_WEBHOOK_SECRET", "MAILBOT_API_TOKEN", "MAILBOT_UNSUBSCRIBE_SECRET")


def hide_secrets(text: str) -> str:
    """``text`` with every password of a URL, and the value of every secret setting in this
    process's environment (also as it appears inside a URL), replaced by ``***``: for error
    messages and tracebacks, which quote what they failed with."""
    secrets: set[str] = set()
    for name, value in os.environ.items():
        if not name.startswith("MAILBOT_") or not value:
            continue
        if name in _SECRET_SETTINGS:
            secrets.add(value)
        try:
            password = urlsplit(value).password if "://" in value else None
        except ValueError:
            password = None
        if password:
            secrets |= {password, unquote(password), quote(unquote(password), safe="")}
    for secret in sorted((s for s in secrets if len(s) >= 3), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _URL_PASSWORD.sub(r"\1***@", text)
