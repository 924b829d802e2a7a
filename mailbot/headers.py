"""Header values made safe: the one place text from users, bots or inbound mail becomes a header.

CPython's email package decodes RFC 2047 encoded words in a value it is given, and 3.11.7
writes decoded CR/LF back out raw (CVE-2024-6923): ``=?utf-8?b?DQpCY2M6IC4uLg==?=`` in a
subject becomes a ``Bcc:`` line. So every value is decoded here first (repeatedly, bounded),
stripped of anything that can break or reorder a line, collapsed, truncated to whole
characters, and any ``=?`` left over is broken up so the email package has nothing to decode.
The composer then sets the plain text of unstructured fields (Subject, the conversation key);
the email package folds them and RFC 2047-encodes what is not ASCII.

Address and message-id fields are written here, already folded, and set with ``set_raw``
under :data:`COMPOSE_POLICY` (never refolded): on 3.11.7 the email package's folder drops the
quotes of a display name longer than a line (``"A…, evil@evil.test, B" <ann@…>`` leaves as
three addresses) and RFC 2047-encodes a long message-id (threading breaks).
:func:`check_composed` checks the finished bytes once more, as defence in depth.

Addresses are exactly one dot-atom addr-spec (no quoted local parts, no domain literals, no
display names hiding in them): :func:`participant_address` validates a new participant with
email-validator, :func:`mailbox` refuses anything else at composition time.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from email.policy import default as default_policy

from email_validator import EmailNotValidError, validate_email

SUBJECT_MAX = 250
NAME_MAX = 100
KEY_MAX = 200
MESSAGE_ID_MAX = 250
# Decoding never makes text longer, so this bounds all the work done on one value.
_INPUT_MAX = 16 * 1024
_DECODE_ROUNDS = 8
_LINE_MAX = 998  # RFC 5322 2.1.1, without the CRLF
_FOLD_AT = 78  # RFC 5322's SHOULD; one token longer than that stays whole on its line
_EW_BYTES = 45  # UTF-8 bytes per encoded word: "=?utf-8?b?" + 60 + "?=" = 72 <= 75 (RFC 2047)

# Values set with set_raw are written exactly as made here, whatever their line length.
COMPOSE_POLICY = default_policy.clone(refold_source="none")

_ELLIPSIS = "\u2026"
_ENCODED_WORD = re.compile(
    r"=\?([^?\s*]{1,40})(?:\*[^?\s]{0,20})?\?([bBqQ])\?([\x21-\x3e\x40-\x7e]*)\?="
)
# Anything that ends or breaks a line somewhere (C0 incl. TAB/CR/LF, DEL, C1 incl. NEL,
# U+2028/2029) becomes a space; invisible reordering (bidi embeddings, overrides, isolates),
# BOMs and lone surrogates (from surrogateescape'd argv, or UTF-7) are dropped.
_BREAKING = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_INVISIBLE = re.compile(r"[\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")
# Codecs (by codecs.lookup name) that raise whatever the errors argument says, are slow on
# hostile input, or make control characters out of plain ASCII.
_UNSAFE_CODECS = frozenset(
    {"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape"}
)

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_ADDR_SPEC = re.compile(rf"({_ATEXT}+(?:\.{_ATEXT}+)*)@({_LABEL}(?:\.{_LABEL})*)")
_MESSAGE_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>")
_ATOM = re.compile(rf"{_ATEXT}+")
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
_LINE_BREAK = re.compile(rb"\r\n|\n|\r")


class InvalidAddress(ValueError):
    """Not exactly one usable addr-spec; the message says why, in one line."""


class UnsafeMessage(RuntimeError):
    """A composed message whose header block is not what the composer set: a bug in mailbot
    or in the email package, never something to send."""


def header_text(value: str, limit: int) -> str:
    """``value`` as one safe line of at most ``limit`` characters, for an unstructured header."""
    text = value[:_INPUT_MAX]
    for _ in range(_DECODE_ROUNDS):
        decoded = decode_encoded_words(text)
        if decoded == text:
            break
        text = decoded
    text = _INVISIBLE.sub("", _BREAKING.sub(" ", text))
    text = " ".join(text.split())
    # Whatever still looks like the start of an encoded word must not be decoded again by
    # the email package: "= ?" reads the same to a person and is plain text to a decoder.
    text = text.replace("=?", "= ?")
    return truncate(text, limit)


def subject(value: str) -> str:
    return header_text(value, SUBJECT_MAX)


def display_name(value: str) -> str:
    return header_text(value, NAME_MAX)


def conversation_key(value: str) -> str:
    return header_text(value, KEY_MAX)


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut between whole characters, ending in an ellipsis."""
    if len(text) <= limit:
        return text
    cut = limit - 1
    # A combining mark or joiner belongs to the character before it: cut before both.
    while cut > 0 and (unicodedata.combining(text[cut]) or text[cut] in "\u200c\u200d"):
        cut -= 1
    return text[:cut].rstrip() + _ELLIPSIS


def decode_encoded_words(text: str) -> str:
    """One round of RFC 2047 decoding; words that do not decode are left as they are.

    Adjacent encoded words are joined (the whitespace between them is not text, RFC 2047
    6.2), and the bytes of neighbours in one charset are decoded together, so a character
    split across two words survives."""
    out: list[str] = []
    pending: list[tuple[str, bytes]] = []  # (charset, bytes) of the current run of words
    last = 0
    for match in _ENCODED_WORD.finditer(text):
        raw = _word_bytes(match.group(2), match.group(3))
        if raw is None:
            continue
        gap = text[last : match.start()]
        if not (pending and not gap.strip()):
            out.append(_decode_run(pending))
            pending = []
            out.append(gap)
        charset = match.group(1).lower()
        if pending and pending[-1][0] == charset:
            pending[-1] = (charset, pending[-1][1] + raw)
        else:
            pending.append((charset, raw))
        last = match.end()
    out.append(_decode_run(pending))
    out.append(text[last:])
    return "".join(out)


def _word_bytes(encoding: str, encoded: str) -> bytes | None:
    if encoding in "bB":
        try:
            return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            return None
    raw = bytearray()
    i = 0
    while i < len(encoded):
        char = encoded[i]
        if char == "=" and re.fullmatch(r"[0-9A-Fa-f]{2}", encoded[i + 1 : i + 3]):
            raw.append(int(encoded[i + 1 : i + 3], 16))
            i += 3
            continue
        raw.append(0x20 if char == "_" else ord(char))
        i += 1
    return bytes(raw)


def _decode_run(run: list[tuple[str, bytes]]) -> str:
    return "".join(_decode_bytes(charset, raw) for charset, raw in run)


def _decode_bytes(charset: str, raw: bytes) -> str:
    try:
        name = codecs.lookup(charset).name
        if name not in _UNSAFE_CODECS:
            return raw.decode(name, errors="replace")
    except (LookupError, UnicodeError, ValueError):
        pass
    return raw.decode("utf-8", errors="replace")


def addr_spec(value: str) -> str:
    """``value`` if it is exactly one dot-atom addr-spec we can put in a header; else
    :class:`InvalidAddress`. Checks syntax only (no DNS, no policy on domains)."""
    address = value.strip()
    if len(address) > 254:
        raise InvalidAddress(f"address too long: {_shown(value)}")
    found = _ADDR_SPEC.fullmatch(address)
    if found is None:
        raise InvalidAddress(f"not one plain address (local@domain): {_shown(value)}")
    if len(found.group(1)) > 64:
        raise InvalidAddress(f"address too long: {_shown(value)}")
    if "=?" in address:
        # The email package decodes encoded words inside an addr-spec too.
        raise InvalidAddress(f"an address may not contain an encoded word: {_shown(value)}")
    return address


def participant_address(value: str) -> str:
    """A new participant's address, validated and normalised (ASCII, lower-cased).

    email-validator does the syntax and domain rules; deliverability is not asked (no DNS
    here). Reserved names are refused as email-validator does, except ``.test`` (RFC 6761,
    what tests and the README use). SMTPUTF8 local parts are refused: the composer writes
    ASCII headers and the relay may not speak SMTPUTF8; international domains are stored in
    their ASCII (IDNA) form, as they are sent."""
    if len(value) > 1024:
        raise InvalidAddress("address too long")
    try:
        checked = validate_email(
            value.strip(),
            check_deliverability=False,
            allow_smtputf8=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            test_environment=True,
        )
    except EmailNotValidError as exc:
        raise InvalidAddress(f"{_shown(value)} is not one valid email address: {exc}") from exc
    return addr_spec((checked.ascii_email or checked.normalized).lower())


def mailbox(field: str, name: str, address: str, *, name_limit: int = NAME_MAX) -> str:
    """The folded value of an address field (From, To, Reply-To) holding one mailbox: the
    display name cleaned by :func:`header_text`, then exactly one addr-spec. Set it with
    ``msg.set_raw(field, value)`` on a message made with :data:`COMPOSE_POLICY`."""
    spec = addr_spec(address)
    display = header_text(name, name_limit)
    if not display:
        return _fold(field, [spec])
    return _fold(field, [*_phrase(display), f"<{spec}>"])


def unstructured(field: str, text: str) -> str:
    """The folded value of an unstructured field (Subject, X-Mailbot-Conversation) holding
    ``text``, already cleaned by :func:`header_text`: ASCII words as they are, runs of other
    words as RFC 2047 B words. Written here, not by the email package, whose folder (3.11.7)
    can leave an encoded word that does not decode back. Set it with ``msg.set_raw``."""
    tokens = _encode_runs(text.split(" "), str.isascii)
    return _fold(field, tokens) if tokens else ""


def _encode_runs(words: list[str], plain: Callable[[str], bool]) -> list[str]:
    """``words`` as tokens: the ``plain`` ones as they are, each run of the others as RFC 2047
    words (the spaces between the words of a run are encoded with them)."""
    tokens: list[str] = []
    run: list[str] = []
    for word in [*words, ""]:
        if word and not plain(word):
            run.append(word)
            continue
        if run:
            tokens.extend(_encoded_words(" ".join(run)))
            run = []
        if word:
            tokens.append(word)
    return tokens


def _phrase(display: str) -> list[str]:
    """A display name as tokens that are safe to fold between: atoms, a quoted string split
    at its spaces (FWS is allowed inside one), or RFC 2047 encoded words."""
    words = display.split(" ")
    if display.isascii():
        if all(_ATOM.fullmatch(word) for word in words):
            return words
        quoted = display.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}"'.split(" ")
    return _encode_runs(words, lambda word: word.isascii() and bool(_ATOM.fullmatch(word)))


def _encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 B words, cut between characters, each at most 75 characters."""
    words: list[str] = []
    chunk = b""
    for char in text:
        raw = char.encode("utf-8")
        if len(chunk) + len(raw) > _EW_BYTES:
            words.append(_b_word(chunk))
            chunk = b""
        chunk += raw
    if chunk:
        words.append(_b_word(chunk))
    return words


def _b_word(raw: bytes) -> str:
    return f"=?utf-8?b?{base64.b64encode(raw).decode('ascii')}?="


def message_ids(field: str, ids: Iterable[str | None]) -> str | None:
    """The folded value of In-Reply-To or References: the usable ids among ``ids`` (see
    :func:`message_id`), once each, in order; None when there is none."""
    kept = [i for i in dict.fromkeys(message_id(i) for i in ids) if i]
    return _fold(field, kept) if kept else None


def _fold(field: str, tokens: list[str]) -> str:
    """Tokens joined by spaces, a line break put before a token that would pass 78 octets."""
    lines = [tokens[0]]
    used = len(field) + 2 + len(tokens[0])
    for token in tokens[1:]:
        if used + 1 + len(token) > _FOLD_AT:
            lines.append(" " + token)
            used = 1 + len(token)
        else:
            lines[-1] += " " + token
            used += 1 + len(token)
    return "\n".join(lines)


def message_id(value: str | None) -> str | None:
    """``value`` as one ``<left@right>`` message-id safe to put in a header, or None."""
    if not value:
        return None
    candidate = value.strip()
    if (
        len(candidate) > MESSAGE_ID_MAX
        or "=?" in candidate
        or "?=" in candidate
        or not _MESSAGE_ID.fullmatch(candidate)
    ):
        return None
    return candidate


def check_composed(raw: bytes, fields: Sequence[str]) -> None:
    """Raise :class:`UnsafeMessage` unless the header block of ``raw`` holds exactly
    ``fields``, in order: each line starts one of them or continues the one before."""
    seen: list[str] = []
    start = 0
    while True:
        brk = _LINE_BREAK.search(raw, start)
        if brk is None:
            raise UnsafeMessage("the header block never ends")
        line, start = raw[start : brk.start()], brk.end()
        if not line:
            break
        if len(line) > _LINE_MAX:
            raise UnsafeMessage(f"a header line of {len(line)} octets")
        if not line.isascii() or b"\0" in line:
            raise UnsafeMessage("a header line that is not plain ASCII")
        if line[:1] in (b" ", b"\t"):
            if not seen:
                raise UnsafeMessage("a continuation line before any field")
            continue
        name, colon, _ = line.partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            raise UnsafeMessage(f"a header line that is no field: {line[:40]!r}")
        seen.append(name.decode("ascii").lower())
    expected = [field.lower() for field in fields]
    if seen != expected:
        raise UnsafeMessage(f"header fields {seen} where the composer set {expected}")


def _shown(value: str) -> str:
    """An untrusted value in an error message: one line, bounded, quotes and escapes shown."""
    return repr(value[:80] + ("..." if len(value) > 80 else ""))
