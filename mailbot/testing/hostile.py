"""Hostile, mail-shaped bytes for fuzzing the screen, the parser and strip.

Used by ``tests/test_fuzz.py`` (driven by hypothesis through a seeded ``random.Random``) and
``benchmarks/fuzz_parse.py``. Everything here is deterministic for a given ``Random``.

What it makes: headers with RFC 2047 words in good, odd and unusable charsets, NULs, 8-bit
bytes, CR/LF variants, folding in the wrong places, hostile address lists (groups, comments,
unbalanced quotes, comma runs); MIME trees with right and wrong boundaries, deep nesting,
attached messages, reports, broken transfer encodings and very long lines; raw random bytes;
and mutations of real messages (:func:`corpus_messages`).
"""

from __future__ import annotations

import base64
import quopri
import random
import re
from dataclasses import dataclass
from pathlib import Path

CHARSETS = [
    b"utf-8", b"UTF-8", b"iso-8859-1", b"windows-1252", b"utf-16", b"utf-7", b"shift_jis",
    b"iso-2022-jp", b"koi8-r", b"gb2312", b"us-ascii", b"undefined", b"idna", b"punycode",
    b"zlib", b"base64", b"unicode_escape", b"raw_unicode_escape", b"utf\x00-8", b"x-unknown",
    b"", b"utf-8*en", b'"utf-8"', b"\xff\xfe",
]  # fmt: skip
HEADER_NAMES = [
    b"From", b"To", b"Cc", b"Bcc", b"Reply-To", b"Sender", b"Resent-From", b"Subject",
    b"Message-ID", b"In-Reply-To", b"References", b"Date", b"Content-Type",
    b"Content-Disposition", b"Content-Transfer-Encoding", b"MIME-Version", b"Content-ID",
    b"X-Mailer", b"Auto-Submitted", b"List-Id", b"X-Odd", b"from", b"CONTENT-TYPE",
]  # fmt: skip
SNIPPETS = [
    b"\x00", b"\r", b"\n", b"\r\n", b"\r\n ", b"\n\t", b" ", b",", b";", b":", b"@", b"<", b">",
    b'"', b"\\", b"(", b")", b"=?", b"?=", b"--", b"\xff", b"\xc3\xa9", b"\xe2\x80\xae",
    b"\x1b[0m", b"\x7f", b"\x85", b"=", b"'", b"*", b"%", b"%00", b"=00", b"\t",
]  # fmt: skip
TYPES = [
    b"text/plain", b"text/html", b"multipart/mixed", b"multipart/alternative",
    b"multipart/digest", b"multipart/related", b"multipart/report", b"message/rfc822",
    b"message/delivery-status", b"application/octet-stream", b"image/png", b"text",
    b"multipart/", b"", b"message/partial",
]  # fmt: skip
ENCODINGS = [b"7bit", b"8bit", b"base64", b"quoted-printable", b"x-uuencode", b"binary", b"BASE64 "]
TEXTS = [
    "Thanks, that fixed it.",
    "Grüße aus Köln, ça marche, 了解しました",
    "On Mon, 23 Nov 2026 at 10:00, Bob <bob@example.com> wrote:\n> Can you check?\n> Thanks",
    "Sounds good.\n\n-- \nAlice\nSent from my iPhone",
    "-----Original Message-----\nFrom: Bob\nSent: Monday\nTo: Alice\nSubject: x\n\nold text",
    "<html><body><p>Yes</p><blockquote>old</blockquote><div class=gmail_quote>q</div></body>",
    "<p>" + "<div>" * 200 + "deep" + "</div>" * 200,
    "\u202eevil\u202c \x00 \ud800",
]


def corpus_messages(root: Path) -> list[bytes]:
    """Every message of the shared corpora as a whole mail (bare bodies get a header)."""
    found: list[bytes] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix not in (".eml", ".txt", ".html"):
            continue
        data = path.read_bytes()
        if path.suffix != ".eml":
            kind = b"html" if path.suffix == ".html" else b"plain"
            data = b"From: a@example.com\r\nContent-Type: text/" + kind + b"\r\n\r\n" + data
        found.append(data)
    return found


def hostile_mail(
    rng: random.Random, corpus: list[bytes] | None = None, max_size: int = 1024 * 1024
) -> bytes:
    """One message: random bytes, a mutated corpus message or a made-up one; cut at
    ``max_size`` (a cut message is hostile input too)."""
    roll = rng.random()
    if roll < 0.1:
        raw = random_bytes(rng)
    elif corpus and roll < 0.4:
        raw = mutate(rng, rng.choice(corpus))
    else:
        raw = mail_shaped(rng)
    return raw[:max_size]


def random_bytes(rng: random.Random) -> bytes:
    size = rng.choice([0, 1, rng.randrange(100), rng.randrange(20_000)])
    if rng.random() < 0.5:
        alphabet = b'\r\n-=?:;<>@"()\x00 ab\xff\t,B'
        return bytes(rng.choice(alphabet) for _ in range(size))
    return rng.randbytes(size)


def mutate(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randrange(1, 6)):
        at = rng.randrange(len(data) + 1)
        op = rng.randrange(7)
        if op == 0 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            data[at:at] = rng.choice(SNIPPETS) * rng.choice([1, 1, 3, 50, 2000])
        elif op == 2:
            del data[at : at + rng.randrange(200)]
        elif op == 3:
            data[at:at] = data[at : at + rng.randrange(500)] * rng.randrange(1, 20)
        elif op == 4:
            del data[at:]
        elif op == 5:
            data = bytearray(bytes(data).replace(b"\r\n", rng.choice([b"\n", b"\r", b"\n\r"])))
        else:
            data[at:at] = header(rng) + b"\r\n"
    return bytes(data)


@dataclass
class _Plan:
    """What one made-up message may be: parts left, the chance to stop nesting at each
    level, and whether its header fields keep their shape (so the MIME tree is read)."""

    parts: int
    stop: float
    clean: bool

    def field(self, line: bytes) -> bytes:
        return _BROKEN_FOLD.sub(b" ", line) if self.clean else line


_BROKEN_FOLD = re.compile(rb"[\r\n]+(?![ \t])")


def mail_shaped(rng: random.Random) -> bytes:
    newline = rng.choice([b"\r\n"] * 6 + [b"\n", b"\n", b"\r"])
    depth = rng.choice([0, 0, 1, 1, 2, 3, rng.randrange(4, 40)])
    plan = _Plan(rng.choice([20, 200, 1200]), 0.15 if depth <= 3 else 0.01, rng.random() < 0.5)
    count = rng.choice([rng.randrange(2, 12)] * 8 + [rng.randrange(200, 1200)])
    fields = [plan.field(header(rng, long=count < 100)) for _ in range(count)]
    ctype, body = entity(rng, depth, newline, plan)
    rng.shuffle(fields)
    # first, most of the time: a broken field further down must not hide the structure
    fields.insert(0 if rng.random() < 0.6 else len(fields), b"Content-Type: " + ctype)
    return newline.join(fields) + newline + newline + body


def header(rng: random.Random, long: bool = True) -> bytes:
    name = rng.choice(HEADER_NAMES)
    lowered = name.lower()
    if lowered in (b"from", b"to", b"cc", b"bcc", b"reply-to", b"sender", b"resent-from"):
        value = addresses(rng)
    elif lowered in (b"message-id", b"in-reply-to", b"references"):
        value = b" ".join(msg_id(rng) for _ in range(rng.choice([1, 1, 2, 30])))
    elif lowered == b"content-type":
        value = content_type(rng, rng.choice(TYPES), b"b" + str(rng.random()).encode())
    elif lowered == b"date":
        value = rng.choice([b"Mon, 23 Nov 2026 10:00:00 +0000", b"yesterday", b"", b"31 Feb 9999"])
    else:
        value = text_value(rng)
    if long and rng.random() < 0.1:
        value = (value * rng.choice([10, 200, 2000]))[: rng.choice([1000, 20_000, 70_000])]
    return name + b": " + fold(rng, value)


def fold(rng: random.Random, value: bytes) -> bytes:
    if len(value) < 2 or rng.random() < 0.7:
        return value
    at = rng.randrange(1, len(value))
    return value[:at] + rng.choice([b"\r\n ", b"\n\t", b"\r\n", b"\r"]) + value[at:]


def encoded_word(rng: random.Random) -> bytes:
    charset = rng.choice(CHARSETS)
    text = rng.choice(TEXTS).encode("utf-8", "surrogatepass")[: rng.randrange(1, 60)]
    if rng.random() < 0.5:
        kind, payload = b"b", base64.b64encode(text)
        if rng.random() < 0.2:
            payload = payload[: rng.randrange(len(payload) + 1)]  # broken padding
    else:
        kind, payload = b"q", quopri.encodestring(text, header=True).replace(b"=\n", b"")
    return b"=?" + charset + b"?" + kind + b"?" + payload + b"?="


def text_value(rng: random.Random) -> bytes:
    pieces = []
    for _ in range(rng.randrange(1, 8)):
        roll = rng.random()
        if roll < 0.3:
            pieces.append(encoded_word(rng))
        elif roll < 0.6:
            pieces.append(rng.choice(SNIPPETS))
        else:
            pieces.append(rng.choice(TEXTS).encode("utf-8", "surrogatepass")[:40])
    return rng.choice([b" ", b""]).join(pieces)


def addresses(rng: random.Random) -> bytes:
    forms = [
        b"alice@example.com",
        b"Alice <alice@example.com>",
        b'"Doe, Jane (@home)" <jane@example.com>',
        b"friends: alice@example.com, mallory@evil.test;",
        b"alice@example.com (comment (nested))",
        b"<not an address",
        b'"unterminated <x@y>',
        b"alice@example.com@evil.test",
        b"<@route.example:bob@example.com>",
        b"undisclosed-recipients:;",
        b"(" * 40 + b"x@y",
        b":" * 40,
        b"," * rng.choice([20, 2000]) + b"<alice@example.com>",
        encoded_word(rng) + b" <m@evil.test>",
        b"a\x00b@example.com",
        b"\xc3\xa9l\xc3\xa8ve <eleve@example.fr>",
    ]
    return b", ".join(rng.choice(forms) for _ in range(rng.choice([1, 1, 1, 1, 1, 2, 3, 50])))


def msg_id(rng: random.Random) -> bytes:
    return rng.choice(
        [b"<a.%d@client.example>" % rng.randrange(99), b"12345", b"<12345>", b"<a><b>", b"",
         b"bare@host", b"<" + b"x" * 2000 + b"@y>", b"<a\x00b@c>", b"<\xff@x>"]
    )  # fmt: skip


def content_type(rng: random.Random, ctype: bytes, boundary: bytes) -> bytes:
    params = []
    if ctype.startswith(b"text") or rng.random() < 0.2:
        params.append(b"charset=" + rng.choice(CHARSETS))
    if ctype.startswith(b"multipart") or rng.random() < 0.1:
        params.append(
            rng.choice(
                [b'boundary="' + boundary + b'"', b"boundary=" + boundary,
                 b"boundary*=utf-8''" + boundary, b"boundary*0=" + boundary + b"; boundary*1=x",
                 b"boundary=", b'boundary="' + boundary + b' "']
            )
        )  # fmt: skip
    if rng.random() < 0.2:
        params.append(rng.choice([b'name="' + encoded_word(rng) + b'"', b'a=";;;"' * 50]))
    return b"; ".join([ctype, *params])


def entity(rng: random.Random, depth: int, newline: bytes, plan: _Plan) -> tuple[bytes, bytes]:
    """(Content-Type value, body) of a part, ``depth`` levels of multipart deep at most."""
    plan.parts -= 1
    if depth <= 0 or plan.parts <= 0 or rng.random() < plan.stop:
        return leaf(rng, newline)
    kind = rng.choice([b"multipart/mixed", b"multipart/alternative", b"multipart/digest",
                       b"message/rfc822", b"multipart/report"])  # fmt: skip
    if kind == b"message/rfc822":
        inner_type, inner = entity(rng, depth - 1, newline, plan)
        head = newline.join([b"From: fwd@example.com", b"Content-Type: " + inner_type])
        return kind, head + newline + newline + inner
    boundary = b"=_b" + str(rng.randrange(10**6)).encode()
    used = boundary if plan.clean or rng.random() < 0.9 else b"other"
    out = [b"preamble" if rng.random() < 0.3 else b""]
    deep = plan.stop < 0.1
    for _ in range(rng.choice([1, 1, 1, 2] if deep else [1, 2, 2, 3, rng.randrange(1, 60)])):
        if plan.parts <= 0:
            break
        sub_type, sub = entity(rng, depth - 1, newline, plan)
        extra = [plan.field(header(rng, long=False))] if rng.random() < 0.3 else []
        head = newline.join([b"Content-Type: " + sub_type, *extra])
        out.append(b"--" + used + newline + head + newline + newline + sub)
    if rng.random() < 0.8:
        out.append(b"--" + used + b"--" + newline + b"epilogue")
    if plan.clean:
        return kind + b'; boundary="' + boundary + b'"', newline.join(out)
    return content_type(rng, kind, boundary), newline.join(out)


def leaf(rng: random.Random, newline: bytes) -> tuple[bytes, bytes]:
    ctype = rng.choice([b"text/plain", b"text/plain", b"text/html", b"application/octet-stream",
                        b"message/delivery-status", b"image/png"])  # fmt: skip
    text = rng.choice(TEXTS) * rng.choice([1, 1, 1, 1, 1, 1, 5, 5, 5, 50])
    if rng.random() < 0.01:
        text += "x" * rng.choice([100_000, 300_000])  # one very long line
    data = text.encode(rng.choice(["utf-8", "latin-1", "utf-16"]), "replace")
    cte = rng.choice(ENCODINGS)
    if cte.strip().lower() == b"base64":
        data = base64.encodebytes(data)
        if rng.random() < 0.2:
            data = data[: rng.randrange(len(data) + 1)] + b"!!=="
    elif cte == b"quoted-printable":
        data = quopri.encodestring(data)
    elif cte == b"x-uuencode":
        data = b"begin 644 x\n" + data[:200] + b"\nend\n"
    if rng.random() < 0.2:
        data = data.replace(b"\n", newline)
    head_type = content_type(rng, ctype, b"unused")
    if rng.random() < 0.5:
        head_type += newline + b"Content-Transfer-Encoding: " + cte
    if rng.random() < 0.3:
        disposition = rng.choice([
            b"attachment", b"inline", b"attachment; filename*=utf-8''%E2%82%AC.pdf",
            b"attachment; filename*0*=idna''a; filename*1=b",
        ])  # fmt: skip
        head_type += newline + b"Content-Disposition: " + disposition
    return head_type, data
