"""Text out of hostile mail bytes, linear and without exceptions: charsets, RFC 2047 encoded
words, Content-Type parameters (RFC 2231), transfer encodings, and the clean-up that makes
every string safe to store (no NUL, no lone surrogate) and to show on one line; and mail whose
framing lies made readable before the MIME parser reads it for good (:func:`header_start`:
blank lines before the header block; :func:`reframed`: a multipart whose declared boundary
never occurs, read with the one its body uses, or with no boundary line at all, read as its
one text part).

Used by :mod:`mailbot.parse` and :mod:`mailbot.screen`; only the standard library.
"""

from __future__ import annotations

import binascii
import codecs
import re
from email.message import Message
from urllib.parse import unquote_to_bytes

# Codecs Python knows that no mail is written in, or that must not see hostile bytes: idna and
# punycode (quadratic, raise on odd input), undefined (always raises), the escape codecs (they
# make NULs and lone surrogates out of plain ASCII).
_REFUSED_CODECS = frozenset(
    {"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape"}
)


def codec_for(charset: str | None) -> str | None:
    """The Python codec for a declared charset, or None when the name is unusable."""
    if not charset:
        return None
    name = charset.strip().strip("\"'").lower()
    if not name or len(name) > 64 or not name.isascii() or not name.isprintable():
        return None  # a NUL in a name makes codecs.lookup raise ValueError
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    # bytes-to-bytes codecs (zlib, base64, ...) are not charsets: a zlib "charset" is a bomb
    if not getattr(info, "_is_text_encoding", True):
        return None
    if info.name.replace("_", "-") in _REFUSED_CODECS:
        return None
    return info.name


def decode_bytes(data: bytes, charset: str | None, notes: dict[str, None] | None = None) -> str:
    """The declared charset if it really fits, else UTF-8, else Windows-1252 (what most
    mislabelled mail is) with replacement characters. Never raises."""
    codec = codec_for(charset)
    if charset and codec is None and notes is not None:
        notes["CharsetUnknown"] = None
    for name in (codec, "utf-8"):
        if name is None:
            continue
        try:
            return data.decode(name)
        except Exception:  # noqa: BLE001 - UnicodeError, and whatever an odd codec raises
            continue
    return data.decode("cp1252", errors="replace")


def header_text(value: object, notes: dict[str, None]) -> str:
    """A raw header value from the compat32 parser (ASCII, 8-bit bytes as surrogates) as
    text: RFC 6532 UTF-8, else Windows-1252 (noted as ``HeaderUndecodable``)."""
    text = value if isinstance(value, str) else str(value)
    if text.isascii():
        return text
    try:
        data = text.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        notes["HeaderUndecodable"] = None
        return data.decode("cp1252", errors="replace")


# An RFC 2047 word. Each part stops at a "?", so scanning is linear whatever the input; the
# text may hold spaces (broken senders do that), up to a bound.
ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75})\?([bBqQ])\?([^?]{0,2000})\?=")
# The same word's start, on bytes: what the screen counts (never fewer than decode_words sees).
ENCODED_WORD_START = re.compile(rb"=\?[^?\s]{1,75}\?[bBqQ]\?")


class Budget:
    """Encoded words one message may still have decoded; past it, words stay as they are."""

    def __init__(self, words: int) -> None:
        self.words = words


def decode_words(text: str, budget: Budget, notes: dict[str, None]) -> str:
    """Decode the RFC 2047 words in ``text``. Adjacent words are joined first (whitespace
    between them does not count, a character may be split over two words)."""
    if "=?" not in text:
        return text
    out: list[str] = []
    run: list[tuple[str, bytes]] = []
    last = 0
    for m in ENCODED_WORD.finditer(text):
        if budget.words <= 0:
            notes["TooManyEncodedWords"] = None
            break
        budget.words -= 1
        between = text[last : m.start()]
        if not (run and (not between or between.isspace())):
            out.append(_decode_run(run, notes))
            run = []
            out.append(between)
        charset, kind, payload = m.groups()
        run.append((charset.split("*", 1)[0].lower(), _word_bytes(kind, payload)))
        last = m.end()
    out.append(_decode_run(run, notes))
    out.append(text[last:])
    return "".join(out)


def _word_bytes(kind: str, payload: str) -> bytes:
    data = payload.encode("utf-8", "replace")
    if kind in "qQ":
        return binascii.a2b_qp(data, header=True)
    return b64decode(data)


def _decode_run(run: list[tuple[str, bytes]], notes: dict[str, None]) -> str:
    out: list[str] = []
    i = 0
    while i < len(run):
        charset = run[i][0]
        j = i + 1
        while j < len(run) and run[j][0] == charset:
            j += 1
        out.append(decode_bytes(b"".join(data for _, data in run[i:j]), charset, notes))
        i = j
    return "".join(out)


_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_JUNK = bytes(sorted(set(range(256)) - set(_B64_ALPHABET)))


def b64decode(data: bytes | memoryview) -> bytes:
    """Base64 as mail has it: junk ignored, padding missing or wrong."""
    try:
        return binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        clean = bytes(data).translate(None, _B64_JUNK)
        if len(clean) % 4 == 1:
            clean = clean[:-1]
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))


def parseparam(value: str) -> list[str]:
    """``email.message._parseparam`` (split at ";" outside quotes) with the same result, but
    linear: the original recounts quotes from the start at every ";" (quadratic)."""
    s = ";" + value
    out: list[str] = []
    i, n = 0, len(s)
    while i < n and s[i] == ";":
        start = i + 1
        end = s.find(";", start)
        quotes, counted = 0, start
        while end > start:
            quotes += s.count('"', counted, end) - s.count('\\"', counted, end)
            if quotes % 2 == 0:
                break
            counted = end
            end = s.find(";", end + 1)
        if end < 0:
            end = n
        f = s[start:end]
        if "=" in f:
            k = f.index("=")
            f = f[:k].strip().lower() + "=" + f[k + 1 :].strip()
        out.append(f.strip())
        i = end
    return out


def unquote(value: str) -> str:
    if len(value) > 1 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1], flags=re.S)
    return value


_SECTION = re.compile(r"([^*]+)\*(?:(\d{1,3})(\*)?)?")


def params(value: str, notes: dict[str, None]) -> dict[str, str]:
    """The parameters of a Content-Type or Content-Disposition value: names lower-cased,
    values unquoted, RFC 2231 sections joined and decoded (they win over a plain value)."""
    plain: dict[str, str] = {}
    sections: dict[str, list[tuple[int, bool, str]]] = {}
    for item in parseparam(value)[1:]:
        name, _, val = item.partition("=")
        name, val = name.strip().lower(), val.strip()
        section = _SECTION.fullmatch(name)
        if section is None:
            plain.setdefault(name, unquote(val))
            continue
        base, number, star = section.groups()
        encoded = number is None or star is not None
        sections.setdefault(base, []).append((int(number or 0), encoded, unquote(val)))
    for base, pieces in sections.items():
        pieces.sort(key=lambda piece: piece[0])
        charset: str | None = None
        chunks: list[bytes] = []
        for index, encoded, val in pieces:
            if encoded:
                if index == 0 and val.count("'") >= 2:
                    charset, _, val = val.split("'", 2)
                chunks.append(unquote_to_bytes(val))
            else:
                chunks.append(val.encode("utf-8", "replace"))
        plain[base] = decode_bytes(b"".join(chunks), charset or None, notes)
    return plain


_SURROGATE = re.compile(r"[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def safe_text(value: str) -> str:
    """No NUL (PostgreSQL text refuses it) and no lone surrogate (not encodable as UTF-8)."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = _SURROGATE.sub("\ufffd", value)
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def one_line(value: str) -> str:
    """``safe_text`` on one line: control characters (CR and LF among them) become spaces,
    runs of whitespace one space."""
    return " ".join(_CONTROL.sub(" ", safe_text(value)).split())


# --- framing that lies (issue #14) ---

_LEADING_BLANKS = re.compile(rb"(?:[ \t]*\r?\n)+(?=[!-9;-~]{1,76}:)")
_BOUNDARY_LINE = re.compile(rb"^--([^\s]{1,70}?)(?:--)?[ \t]*\r?$", re.MULTILINE)
_CONTENT_TYPE = re.compile(rb"^content-type:.*(?:\r?\n[ \t].*)*", re.IGNORECASE | re.MULTILINE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_HTML = (b"<html", b"<body", b"<div", b"<p>")
_CHARSET = re.compile(r"[\w.:-]{1,40}")


def header_start(raw: bytes) -> int:
    """Where the header block starts: after blank lines before a first field, if any."""
    blanks = _LEADING_BLANKS.match(raw)
    return blanks.end() if blanks else 0


def reframed(raw: bytes, msg: Message) -> tuple[bytes, bool] | None:
    """``raw`` with a Content-Type its body bears out, and whether it is still multipart;
    None when ``msg`` is not a multipart the parser failed to split."""
    if msg.get_content_maintype() != "multipart" or msg.is_multipart():
        return None
    end = _HEADER_END.search(raw)
    if end is None:
        return None
    head, body = raw[: end.start()], raw[end.start() :]
    found = _BOUNDARY_LINE.search(body)
    if found is None:
        kind = "html" if any(tag in body[:2048].lower() for tag in _HTML) else "plain"
        charset = msg.get_param("charset")
        named = isinstance(charset, str) and _CHARSET.fullmatch(charset)
        header = f"Content-Type: text/{kind}" + (f'; charset="{charset}"' if named else "")
    else:
        boundary = found.group(1).decode("ascii", "replace")
        header = f'Content-Type: {msg.get_content_type()}; boundary="{boundary}"'
    fixed = _CONTENT_TYPE.sub(lambda _m: header.encode(), head, count=1) + body
    return fixed, found is not None
