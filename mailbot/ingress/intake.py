"""What the three provider routes share: the body read within a bound, the form read to its
exact bytes, the credential checks, the replay memory, and the one way into the spool.

:meth:`Intake.take` asks of each recipient what RCPT would ask
(:meth:`~mailbot.smtp.handler.ReceiveHandler.recipient_refusal`: a live reply token, a
routed address, never a foreign domain) and stores through DATA's own path
(:meth:`~mailbot.smtp.handler.ReceiveHandler.accept`: header limits, spam at DATA when it
decides, committed before the answer). Its SMTP line becomes the HTTP answer: 2xx is
``200``, 4xx is ``503`` (the provider retries), 5xx the provider's "do not retry" code.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote_to_bytes

from pydantic import SecretStr
from python_multipart import create_form_parser
from python_multipart.multipart import Field, File
from starlette.requests import Request
from starlette.responses import Response

from mailbot.config import Settings
from mailbot.redact import redact_text
from mailbot.smtp.handler import MAX_RECIPIENTS, ReceiveHandler
from mailbot.store import spool
from mailbot.web.answers import Redacted, error

log = logging.getLogger(__name__)

# A body carries the message and the provider's other fields: Postmark's JSON has the raw
# message and its parsed text and attachments beside it, Mailgun's may be URL-encoded.
BODY_FACTOR = 3
BODY_SLACK = 1024 * 1024
MAX_FIELDS = 200
# A signed timestamp this far from our clock (either way) is refused: an old capture of a
# real request cannot be played again later (the providers sign each attempt afresh).
REPLAY_WINDOW = 300.0
BIG = 256 * 1024  # bodies at least this big are parsed and hashed off the event loop

Kind = Literal["stored", "refused", "later"]


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    said: str  # the SMTP line, as a sender at our RCPT or DATA would have read it
    inbound_id: int | None = None


class Refused(Exception):
    """The request is refused as it is, with this HTTP status and words."""

    def __init__(self, status: int, words: str) -> None:
        super().__init__(words)
        self.status = status
        self.words = words


@dataclass
class Intake:
    """The SMTP policy of this node (its recipient checks and its durable store), for mail
    that comes over HTTP."""

    settings: Settings
    handler: ReceiveHandler

    @property
    def max_body(self) -> int:
        return self.settings.max_message_size * BODY_FACTOR + BODY_SLACK

    async def take(
        self, provider: str, raw: bytes, mail_from: str, rcpt_tos: list[str], client_ip: str | None
    ) -> Outcome:
        limit = self.settings.max_message_size
        if len(raw) > limit:
            return self._refused(provider, f"552 5.3.4 Message refused: over {limit} bytes")
        if not rcpt_tos or len(rcpt_tos) > MAX_RECIPIENTS:
            return self._refused(provider, f"554 5.5.3 Not 1 to {MAX_RECIPIENTS} recipients")
        refusal = self.handler.sender_refusal(mail_from)
        for address in rcpt_tos:
            if refusal is None:
                refusal = await self.handler.recipient_refusal(address)
        if refusal is not None:
            return self._refused(provider, refusal)
        envelope = spool.Envelope(
            mail_from=mail_from,
            rcpt_tos=rcpt_tos,
            client_ip=client_ip,
            helo=None,
            tls=False,  # how it reached the provider, or us, is not known here
        )
        said = await self.handler.accept(raw, envelope)
        if not said.startswith("2"):
            return self._refused(provider, said)
        inbound_id = int(said.rsplit(" ", 1)[1])
        log.info("stored inbound %s from the %s webhook", inbound_id, provider)
        return Outcome("stored", said, inbound_id)

    def _refused(self, provider: str, said: str) -> Outcome:
        # One line for the operator; a reply token in it is shown as its fingerprint.
        log.info("refused a %s post: %s", provider, redact_text(said))
        return Outcome("later" if said.startswith("4") else "refused", said)


def answer(outcome: Outcome, refused: int) -> Response:
    """The HTTP answer to a provider: ``refused`` is its status that stops retries."""
    if outcome.kind == "stored":
        return Redacted({"stored": outcome.inbound_id})
    return error(503 if outcome.kind == "later" else refused, outcome.said)


async def read_body(request: Request, limit: int, refused: int) -> bytes:
    """The whole body, or :class:`Refused` once it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(refused, f"request over {limit} bytes (max_message_size)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(refused, f"request over {limit} bytes (max_message_size)")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(content_type: str, body: bytes) -> dict[str, bytes]:
    """The first value of each field of a ``multipart/form-data`` or URL-encoded body, as
    the exact bytes sent (a raw message in a form field keeps its 8-bit bytes). Refused
    (400) if it is neither or malformed."""
    if len(body) >= BIG:
        return await asyncio.to_thread(_form, content_type, body)
    return _form(content_type, body)


def _form(content_type: str, body: bytes) -> dict[str, bytes]:
    fields: dict[str, bytes] = {}
    encoded = content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded"

    def on_field(field: Field) -> None:
        value = field.value or b""
        if encoded:  # python-multipart hands URL-encoded values on as sent
            value = unquote_to_bytes(value.replace(b"+", b" "))
        fields.setdefault((field.field_name or b"").decode("latin-1"), value)

    def on_file(file: File) -> None:
        file.file_object.seek(0)
        fields.setdefault((file.field_name or b"").decode("latin-1"), file.file_object.read())

    config = {"MAX_FIELDS": MAX_FIELDS, "MAX_MEMORY_FILE_SIZE": float("inf")}
    try:
        parser = create_form_parser(
            {"Content-Type": content_type.encode("latin-1")}, on_field, on_file, config
        )
        parser.write(body)
        parser.finalize()
    except (ValueError, UnicodeEncodeError) as exc:  # every parser error is a ValueError
        raise Refused(400, f"not a form this route reads: {type(exc).__name__}") from None
    return fields


def secret_of(value: SecretStr | None) -> str | None:
    """A configured secret, stripped; unset or blank: None (its route is off)."""
    found = "" if value is None else value.get_secret_value().strip()
    return found or None


def text(value: bytes | None) -> str:
    """A short field (an address, a timestamp) as text: UTF-8, else nothing."""
    try:
        return (value or b"").decode("utf-8").strip()
    except UnicodeDecodeError:
        return ""


def ip_or_none(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def basic_auth_ok(request: Request, user: str, password: str) -> bool:
    """``Authorization: Basic`` with exactly these credentials, compared in constant time."""
    scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(given.strip(), validate=True)
    except ValueError:
        return False
    name, _, secret = decoded.partition(b":")
    # Both compared, always: the time taken says nothing about which one was wrong.
    name_ok = hmac.compare_digest(name, user.encode())
    secret_ok = hmac.compare_digest(secret, password.encode())
    return name_ok and secret_ok


def fresh(timestamp: str, now: float | None = None) -> bool:
    """A signed Unix time within :data:`REPLAY_WINDOW` of our clock."""
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    return abs((time.time() if now is None else now) - int(timestamp)) <= REPLAY_WINDOW


class Replays:
    """The signed requests taken in the last :data:`REPLAY_WINDOW`, by a key the signature
    covers: the same one again is a replay. In memory, per node; only requests with a
    valid signature get in, so only the provider can fill it."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._order: deque[tuple[float, str]] = deque()

    def claim(self, key: str, now: float | None = None) -> bool:
        """True the first time ``key`` is seen within the window."""
        now = time.monotonic() if now is None else now
        while self._order and self._order[0][0] <= now:
            until, old = self._order.popleft()
            if self._until.get(old) == until:
                del self._until[old]
        if key in self._until:
            return False
        # Twice the window: a timestamp may be that far off and still be fresh.
        self._until[key] = now + 2 * REPLAY_WINDOW
        self._order.append((self._until[key], key))
        return True

    def release(self, key: str) -> None:
        """Not stored after all (the provider will retry it): it may come again."""
        self._until.pop(key, None)
