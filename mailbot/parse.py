"""MIME bytes → :class:`ParsedMail`, the JSON shape users see.

Parsing never raises and its work is bounded, whatever the bytes: a broken boundary, an
unknown charset, random bytes or a hostile header give a ParsedMail with what could be read
and the complaints in ``defects``. Pure and synchronous: it runs in a worker process.

How it stays bounded: the MIME tree comes from the standard library's feed parser with the
``compat32`` policy (raw header strings, simple parameter rules; the newer header objects are
quadratic on hostile headers and raise on odd values), fed through a subclass that refuses to
nest deeper or make more parts than :class:`~mailbot.screen.Limits` allow (``MimeTooDeep`` /
``TooManyParts``: headers are kept, the body is not read). Header values are decoded here
(:mod:`mailbot.decoding`), RFC 2047 words up to a per-message budget. Every string in the
result is free of NUL and lone surrogates; header values and addresses are one line.

Defects of our own, beside the parser's: ``BoundaryRepaired``, ``MultipartReadAsText`` (a
multipart whose body has no boundary line: its body read as the one text part),
``LeadingBlankLines`` (blank lines before the header block, skipped), ``CharsetUnknown``,
``HeaderUndecodable``, ``TooManyEncodedWords``, ``TooManyAddresses``, ``InvalidMessageId``
(a Message-ID that is neither ``<...>`` nor ``local@domain``, e.g. ``12345``: message_id is
None rather than a made-up id that could make another mail look like a duplicate),
``MultipleFromHeaders``, ``FromGroupSyntax``, ``FromUnparseable`` (for the sender checks:
``from_`` lists every address found in every From header), and ``ParseError: <type>`` when
the last-resort guard had to stop.
"""

from __future__ import annotations

import binascii
from dataclasses import asdict, dataclass, field
from email.feedparser import BytesFeedParser
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from mailbot import big_parts
from mailbot.decoding import (
    Budget,
    b64decode,
    decode_bytes,
    decode_words,
    header_start,
    header_text,
    one_line,
    params,
    reframed,
    safe_text,
)
from mailbot.header_values import address_list, date, from_addresses, msg_ids
from mailbot.screen import Limits, boundary_of, header_end


@dataclass
class Address:
    name: str
    address: str


@dataclass
class Attachment:
    filename: str | None
    content_type: str
    size: int
    content_id: str | None = None
    disposition: str | None = None


@dataclass
class ParsedMail:
    headers: list[tuple[str, str]] = field(default_factory=list)
    from_: list[Address] = field(default_factory=list)
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    reply_to: list[Address] = field(default_factory=list)
    subject: str = ""
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    date: str | None = None
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)

    @property
    def sender(self) -> str | None:
        """The From address, lower-cased; None when there is none we can read."""
        for addr in self.from_:
            if "@" in addr.address:
                return addr.address.lower()
        return None

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["from"] = data.pop("from_")
        data["headers"] = [list(h) for h in self.headers]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ParsedMail:
        data = dict(data)

        def addr(items: list[dict[str, Any]]) -> list[Address]:
            return [Address(**a) for a in items]

        return cls(
            headers=[(k, v) for k, v in data.get("headers", [])],
            from_=addr(data.get("from", [])),
            to=addr(data.get("to", [])),
            cc=addr(data.get("cc", [])),
            reply_to=addr(data.get("reply_to", [])),
            subject=data.get("subject", ""),
            message_id=data.get("message_id"),
            in_reply_to=data.get("in_reply_to"),
            references=list(data.get("references", [])),
            date=data.get("date"),
            text=data.get("text"),
            html=data.get("html"),
            attachments=[Attachment(**a) for a in data.get("attachments", [])],
            defects=list(data.get("defects", [])),
        )


def parse(raw: bytes, limits: Limits | None = None) -> ParsedMail:
    """Never raises: the last-resort guard keeps what was read (RecursionError and
    MemoryError included) and says so in ``defects``."""
    mail = ParsedMail()
    notes: dict[str, None] = {}  # defect names, in order, once each
    try:
        _read(raw, limits or Limits(), mail, notes)
    except Exception as exc:  # noqa: BLE001 - the guard itself: whatever it was, answer
        notes[f"ParseError: {type(exc).__name__}"] = None
    mail.defects = list(notes)
    try:
        _make_safe(mail)
    except Exception as exc:  # noqa: BLE001 - e.g. MemoryError: an empty but valid answer
        mail = ParsedMail(defects=[*notes, f"ParseError: {type(exc).__name__}"])
    return mail


def first_message_id(value: object) -> str | None:
    """The first message id in a raw header value, ``<...>``; None when there is none."""
    ids = msg_ids(header_text(value, {}))
    return ids[0] if ids else None


class _Refused(Exception):
    def __init__(self, defect: str) -> None:
        super().__init__(defect)
        self.defect = defect


class _Part(Message):
    """The feed parser's message class: the boundary is read in linear time, never raising
    (the same reading as the screen's)."""

    def get_boundary(self, failobj: Any = None) -> Any:
        value = self.get("content-type")
        found = None if value is None else boundary_of(str(value))
        return failobj if found is None else found


class _BoundedParser(BytesFeedParser):
    """Refuses to nest deeper or make more parts than the limits allow: the feed parser
    recurses once per level, and every part is an object."""

    def __init__(self, limits: Limits) -> None:
        super().__init__(_Part, policy=compat32)
        self._limits = limits
        self._made = 0

    def _new_message(self) -> None:
        if len(self._msgstack) > self._limits.max_mime_depth:  # type: ignore[attr-defined]
            raise _Refused("MimeTooDeep")
        self._made += 1
        if self._made > self._limits.max_mime_parts + 1:
            raise _Refused("TooManyParts")
        super()._new_message()  # type: ignore[misc]


_CHUNK = 64 * 1024


def _tree(raw: bytes, limits: Limits) -> Message:
    """The parsed tree; big attachments are left in ``raw`` (mailbot/big_parts.py)."""
    return big_parts.tree(raw, limits, lambda data: _feed(data, limits))


def _feed(raw: bytes, limits: Limits) -> Message:
    parser = _BoundedParser(limits)
    for i in range(0, len(raw), _CHUNK):
        parser.feed(raw[i : i + _CHUNK])
    return parser.close()


def _read(raw: bytes, limits: Limits, mail: ParsedMail, notes: dict[str, None]) -> None:
    budget = Budget(limits.max_encoded_words)
    start = header_start(raw)
    if start:
        raw = raw[start:]
        notes["LeadingBlankLines"] = None
    head = BytesHeaderParser(policy=compat32).parsebytes(raw[: header_end(raw)])
    _read_headers(head, mail, notes, budget, limits)  # first: kept whatever the body does
    try:
        msg = _tree(raw, limits)
        repaired = _repair_boundary(raw, msg, limits)
    except _Refused as refused:
        notes[refused.defect] = None
        return
    if repaired is not None:
        msg = repaired
        notes["BoundaryRepaired" if msg.is_multipart() else "MultipartReadAsText"] = None
    for name in sorted({type(d).__name__ for part in msg.walk() for d in part.defects}):
        notes[name] = None
    _walk(msg, mail, notes, budget)


def _read_headers(
    head: Message, mail: ParsedMail, notes: dict[str, None], budget: Budget, limits: Limits
) -> None:
    items = [(name, header_text(value, notes)) for name, value in head.raw_items()]
    mail.headers = [(one_line(k), one_line(decode_words(v, budget, notes))) for k, v in items]
    values: dict[str, list[str]] = {}
    for key, value in items:
        values.setdefault(key.lower(), []).append(value)
    mail.subject = mail.header("subject") or ""
    mail.to = _listed(address_list(values.get("to", []), notes, budget, limits))
    mail.cc = _listed(address_list(values.get("cc", []), notes, budget, limits))
    mail.reply_to = _listed(address_list(values.get("reply-to", []), notes, budget, limits))
    mail.from_ = _listed(from_addresses(values.get("from", []), notes, budget, limits))
    message_id = values.get("message-id", [""])[0]
    found = msg_ids(message_id)
    mail.message_id = found[0] if found else None
    if message_id.strip() and not found:
        notes["InvalidMessageId"] = None
    in_reply_to = msg_ids(values.get("in-reply-to", [""])[0])
    mail.in_reply_to = in_reply_to[0] if in_reply_to else None
    mail.references = msg_ids(" ".join(values.get("references", [])))
    mail.date = date(mail.header("date"))


def _listed(pairs: list[tuple[str, str]]) -> list[Address]:
    return [Address(name=name, address=address) for name, address in pairs]


def _repair_boundary(raw: bytes, msg: Message, limits: Limits) -> Message | None:
    """A multipart the parser could not split, read again as its body bears out."""
    found = reframed(raw, msg)
    if found is None:
        return None
    fixed, multipart = found
    try:
        again = _tree(fixed, limits)
    except _Refused:  # read with the body's boundary it would be over a limit: leave it
        return None
    return again if again.is_multipart() or not multipart else None


def _first(part: Message, name: str, notes: dict[str, None]) -> str | None:
    for key, value in part.raw_items():
        if key.lower() == name:
            return header_text(value, notes)
    return None


def _walk(part: Message, mail: ParsedMail, notes: dict[str, None], budget: Budget) -> None:
    """Pick the first text/plain and text/html bodies; list everything else as attachments.

    An attached message (message/rfc822, a forward as attachment) is one attachment: its
    body must never be mistaken for the sender's own text.
    """
    ctype = part.get_content_type()
    if part.is_multipart():
        if ctype == "message/rfc822":
            mail.attachments.append(_attachment(part, _size(part), notes, budget))
            return
        for sub in part.get_payload():
            if isinstance(sub, Message):
                _walk(sub, mail, notes, budget)
        return
    disposition = _disposition(part, notes)
    is_body = ctype in ("text/plain", "text/html") and disposition != "attachment"
    if is_body and ctype == "text/plain" and mail.text is None:
        mail.text = _text(part, notes).replace("\r\n", "\n")
    elif is_body and ctype == "text/html" and mail.html is None:
        mail.html = _text(part, notes).replace("\r\n", "\n")
    else:
        mail.attachments.append(_attachment(part, len(_payload(part, notes)), notes, budget))


def _disposition(part: Message, notes: dict[str, None]) -> str | None:
    value = _first(part, "content-disposition", notes)
    if value is None:
        return None
    return value.partition(";")[0].strip().lower() or None


def _attachment(part: Message, size: int, notes: dict[str, None], budget: Budget) -> Attachment:
    filename = params(_first(part, "content-disposition", notes) or "", notes).get("filename")
    if filename is None:
        filename = params(_first(part, "content-type", notes) or "", notes).get("name")
    content_id = _first(part, "content-id", notes)
    return Attachment(
        filename=None if filename is None else one_line(decode_words(filename, budget, notes)),
        content_type=part.get_content_type(),
        size=size,
        content_id=None if content_id is None else one_line(content_id),
        disposition=_disposition(part, notes),
    )


def _size(msg: Message) -> int:
    """About the size of an attached message (its header and body text), without writing
    it out again."""
    total = 0
    for part in msg.walk():
        total += sum(len(k) + len(str(v)) + 4 for k, v in part.raw_items())
        payload = _stored(part)
        if isinstance(payload, str | bytes):
            total += len(payload)
    return total


def _stored(part: Message) -> Any:
    """The payload as the parser stored it: get_payload() decodes 8-bit text with the
    declared charset, and raises for some (idna, undefined, a NUL in the name)."""
    return getattr(part, "_payload", None)


def _payload(part: Message, notes: dict[str, None]) -> bytes:
    """The decoded body of a leaf part; bad base64 or quoted-printable is read leniently."""
    view = big_parts.body(part)
    payload = _stored(part) if view is None else view
    if isinstance(payload, bytes | memoryview):
        data = payload
    elif isinstance(payload, str):
        data = payload.encode("utf-8", "surrogateescape")
    else:
        return b""
    cte = (_first(part, "content-transfer-encoding", notes) or "").strip().lower()
    if cte == "base64":
        return b64decode(data)
    if cte == "quoted-printable":
        return binascii.a2b_qp(data)
    if cte in ("x-uuencode", "uuencode", "uue", "x-uue"):
        try:
            decoded = part.get_payload(decode=True)
        except Exception:  # noqa: BLE001 - bad uuencode: keep the bytes as they are
            return bytes(data)
        return decoded if isinstance(decoded, bytes) else bytes(data)
    return bytes(data)


def _text(part: Message, notes: dict[str, None]) -> str:
    """Decode a text part from its bytes: the declared charset if it really fits, else UTF-8,
    else Windows-1252, never an exception."""
    charset = params(_first(part, "content-type", notes) or "", notes).get("charset")
    return decode_bytes(_payload(part, notes), charset, notes)


def _make_safe(mail: ParsedMail) -> None:
    """The promise of the module docstring, kept in one place whatever went before."""
    mail.headers = [(one_line(k), one_line(v)) for k, v in mail.headers]
    for addresses in (mail.from_, mail.to, mail.cc, mail.reply_to):
        for addr in addresses:
            addr.name, addr.address = one_line(addr.name), one_line(addr.address)
    mail.subject = one_line(mail.subject)
    mail.message_id = None if mail.message_id is None else one_line(mail.message_id)
    mail.in_reply_to = None if mail.in_reply_to is None else one_line(mail.in_reply_to)
    mail.references = [one_line(r) for r in mail.references]
    mail.date = None if mail.date is None else one_line(mail.date)
    mail.text = None if mail.text is None else safe_text(mail.text)
    mail.html = None if mail.html is None else safe_text(mail.html)
    for a in mail.attachments:
        a.filename = None if a.filename is None else one_line(a.filename)
        a.content_type = one_line(a.content_type)
        a.content_id = None if a.content_id is None else one_line(a.content_id)
        a.disposition = None if a.disposition is None else one_line(a.disposition)
    mail.defects = [one_line(d) for d in mail.defects]
