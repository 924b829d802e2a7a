"""MIME bytes → :class:`ParsedMail`, the JSON shape users see.

Parsing never raises on bad input: a broken boundary, an unknown charset or a body of random
bytes gives a ParsedMail with what could be read and the parser's complaints in ``defects``.
Pure and synchronous on purpose: it runs in a worker process, off the SMTP event loop.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import asdict, dataclass, field
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any


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

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key.lower() == name]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["from"] = data.pop("from_")
        data["headers"] = [list(h) for h in self.headers]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ParsedMail:
        data = dict(data)
        addr = lambda items: [Address(**a) for a in items]  # noqa: E731
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


_PARSER = BytesParser(policy=policy.default)


def parse(raw: bytes) -> ParsedMail:
    msg: Message = _PARSER.parsebytes(raw)
    repaired = _repair_boundary(raw, msg)
    defects = _defects(msg)
    if repaired is not None:
        msg = repaired
        defects.add("BoundaryRepaired")
    mail = ParsedMail()
    mail.headers = [(k, _header_str(msg, k, v)) for k, v in msg.raw_items()]
    mail.from_ = _addresses(msg, "from")
    mail.to = _addresses(msg, "to")
    mail.cc = _addresses(msg, "cc")
    mail.reply_to = _addresses(msg, "reply-to")
    mail.subject = _one_line(_get(msg, "subject") or "")
    mail.message_id = _msg_ids(_get(msg, "message-id"))[:1][0] if _get(msg, "message-id") else None
    in_reply_to = _msg_ids(_get(msg, "in-reply-to"))
    mail.in_reply_to = in_reply_to[0] if in_reply_to else None
    mail.references = _msg_ids(_get(msg, "references"))
    mail.date = _date(_get(msg, "date"))
    _walk(msg, mail)
    mail.defects = sorted(defects | _defects(msg))
    return mail


def _defects(msg: Message) -> set[str]:
    return {type(d).__name__ for part in msg.walk() for d in part.defects}


_BOUNDARY_LINE = re.compile(rb"^--([^\s]{1,70}?)(?:--)?[ \t]*\r?$", re.MULTILINE)
_CONTENT_TYPE = re.compile(rb"^content-type:.*(?:\r?\n[ \t].*)*", re.IGNORECASE | re.MULTILINE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def _repair_boundary(raw: bytes, msg: Message) -> Message | None:
    """A multipart message whose declared boundary never occurs: re-read it with the boundary
    its body actually uses (some senders rewrite one and not the other), so the text is not
    lost as one opaque attachment."""
    if msg.get_content_maintype() != "multipart" or msg.is_multipart():
        return None
    end = _HEADER_END.search(raw)
    if end is None:
        return None
    head, body = raw[: end.start()], raw[end.start() :]
    found = _BOUNDARY_LINE.search(body)
    if found is None:
        return None
    boundary = found.group(1).decode("ascii", "replace")
    header = f'Content-Type: {msg.get_content_type()}; boundary="{boundary}"'.encode()
    again = _PARSER.parsebytes(_CONTENT_TYPE.sub(lambda _m: header, head, count=1) + body)
    return again if again.is_multipart() else None


def _get(msg: Message, name: str) -> str | None:
    try:
        value = msg.get(name)
    except Exception:  # the header parser can choke on hostile input; fall back to raw
        value = next((v for k, v in msg.raw_items() if k.lower() == name), None)
    return None if value is None else str(value)


def _header_str(msg: Message, name: str, raw: str) -> str:
    try:
        return _one_line(str(msg.policy.header_factory(name, raw)))  # type: ignore[attr-defined]
    except Exception:
        return _one_line(raw)


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _addresses(msg: Message, name: str) -> list[Address]:
    values = []
    for key, raw in msg.raw_items():
        if key.lower() == name:
            values.append(_header_str(msg, key, raw))
    return [
        Address(name=n, address=a)
        for n, a in getaddresses(values)
        if a or n  # getaddresses answers ('', '') for what it cannot read
    ]


def _msg_ids(value: str | None) -> list[str]:
    if not value:
        return []
    ids = []
    for word in value.replace(",", " ").split():
        word = word.strip()
        if word.startswith("<") and word.endswith(">") and len(word) > 2:
            ids.append(word)
        elif "@" in word and "<" not in word and ">" not in word:
            ids.append(f"<{word}>")  # some clients drop the brackets
    return ids


def _date(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).isoformat()
    except (TypeError, ValueError, IndexError):
        return None


def _walk(part: Message, mail: ParsedMail) -> None:
    """Pick the first text/plain and text/html bodies; list everything else as attachments.

    An attached message (message/rfc822, a forward as attachment) is one attachment: its
    body must never be mistaken for the sender's own text.
    """
    ctype = part.get_content_type()
    if part.is_multipart():
        if ctype == "message/rfc822":
            mail.attachments.append(_attachment(part, size=len(part.as_bytes())))
            return
        for sub in part.get_payload():
            if isinstance(sub, Message):
                _walk(sub, mail)
        return
    disposition = part.get_content_disposition()
    is_body = ctype in ("text/plain", "text/html") and disposition != "attachment"
    if is_body and ctype == "text/plain" and mail.text is None:
        mail.text = _text(part).replace("\r\n", "\n")
    elif is_body and ctype == "text/html" and mail.html is None:
        mail.html = _text(part).replace("\r\n", "\n")
    else:
        payload = part.get_payload(decode=True)
        mail.attachments.append(_attachment(part, size=len(payload) if payload else 0))


def _attachment(part: Message, size: int) -> Attachment:
    return Attachment(
        filename=part.get_filename(),
        content_type=part.get_content_type(),
        size=size,
        content_id=part.get("content-id"),
        disposition=part.get_content_disposition(),
    )


def _text(part: Message) -> str:
    """Decode a text part from its bytes: the declared charset if it really fits, else UTF-8,
    else Windows-1252 (what most mislabelled mail is), never an exception."""
    payload = part.get_payload(decode=True) or b""
    if not isinstance(payload, bytes):
        return str(payload)
    declared = part.get_content_charset() or "us-ascii"
    for charset in (declared, "utf-8"):
        try:
            codecs.lookup(charset)
            return payload.decode(charset)
        except (LookupError, UnicodeDecodeError):
            continue
    return payload.decode("cp1252", errors="replace")
