"""A message's raw source as the page may show it: as received, with every reply address
redacted, also where the sender's client hid it in base64 or quoted-printable.

Redacting the bytes (:func:`mailbot.redact.redact_bytes`) finds an address written out or
in the quoted-printable forms it knows; a part whose body is base64 (Gmail's choice for any
non-ASCII text) or quoted-printable can still hold one. Each such text part is decoded,
redacted and, only if that changed it, encoded again the same way; the rest of the message
stays byte for byte as received. Parsing runs in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import email
import email.encoders
import email.generator
import io
from email import policy
from email.message import Message

from mailbot.redact import redact_bytes, redact_text


def _redact_parts(message: Message) -> bool:
    changed = False
    for part in message.walk():
        if part.is_multipart():
            continue
        encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
        if encoding not in ("base64", "quoted-printable"):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        shown = _shown(part, payload)
        if shown is None:
            continue
        del part["content-transfer-encoding"]
        part.set_payload(shown)
        if encoding == "base64":
            email.encoders.encode_base64(part)
        else:
            email.encoders.encode_quopri(part)
        changed = True
    return changed


def _shown(part: Message, payload: bytes) -> bytes | None:
    """The payload with its reply addresses redacted, or None when it holds none. Bytes
    first, whatever the part's type (an .eml attached as octet-stream); then, for text, in
    its charset (UTF-16, say), where that charset works both ways."""
    redacted = redact_bytes(payload)
    if redacted != payload:
        return redacted
    if part.get_content_maintype() not in ("text", "message"):
        return None
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload.decode(charset, errors="replace")
        cleaned = redact_text(text)
        return None if cleaned == text else cleaned.encode(charset, errors="replace")
    except (LookupError, UnicodeError, ValueError):  # "idna", "undefined", …
        return None


def redacted_source(raw: bytes) -> bytes:
    shown = redact_bytes(raw)
    message = email.message_from_bytes(shown, policy=policy.compat32)
    if not _redact_parts(message):
        return shown
    out = io.BytesIO()
    email.generator.BytesGenerator(out, mangle_from_=False, maxheaderlen=0).flatten(message)
    return out.getvalue()


async def shown(raw: bytes) -> bytes:
    return await asyncio.to_thread(redacted_source, raw)
