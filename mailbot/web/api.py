"""The JSON API: what the CLI's ``--json`` commands print, over HTTP.

GET /health                          liveness and what is (not) configured
GET /api/messages[?status=&limit=]   inbound messages, newest first
GET /api/messages/{id}               one, with the full parsed JSON
GET /api/conversations/{key}         a conversation with participants and comments
GET /api/outbox[?limit=]             outbound messages with their delivery status
GET /api/inbound/{id}/attachments    a message's attachments: name, type, size, url
GET /api/inbound/{id}/attachments/{n}  one attachment's bytes, streamed from the blob store

Closed by default (mailbot/web/guard.py): a Host allow-list, and a bearer token when one is
set. Bad parameters are 400 and unknown ids 404, always as ``{"error": ...}``; every answer
is redacted (mailbot/redact.py), so no live reply token or VERP id is ever shown.

Attachments are served as downloads, never as pages: ``Content-Disposition: attachment``
with a cleaned name, a Content-Type only from :data:`SAFE_TYPES` (else
``application/octet-stream``: no HTML or SVG runs from here), ``nosniff`` and a CSP that
allows nothing. Text and attached messages are redacted as they stream; other types are the
bytes as received.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mailbot.config import Settings
from mailbot.redact import redact, redact_bytes, redact_text
from mailbot.store import attachments as stored_attachments
from mailbot.store import blobs
from mailbot.store.db import Sessions
from mailbot.store.models import InboundStatus
from mailbot.web import views
from mailbot.web.guard import Guard

MAX_LIMIT = 1000
MAX_ID = 2**31 - 1  # ids are INTEGER columns; PostgreSQL's is 32-bit
MAX_KEY = 200  # Conversation.key's length
_DIGITS = re.compile(r"[0-9]{1,10}")  # ASCII only: int() also reads "٣", " 3" and "1_0"

log = logging.getLogger(__name__)

# Types that run no script in our origin whatever a browser does with them; others are served
# as application/octet-stream.
SAFE_TYPES = frozenset(
    {
        "application/pdf",
        "application/zip",
        "application/gzip",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/pgp-signature",
        "application/pkcs7-signature",
        "text/plain",
        "text/csv",
        "text/calendar",
        "message/rfc822",
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "audio/mpeg",
        "audio/ogg",
        "video/mp4",
    }
)
_NOT_IN_FALLBACK = re.compile(r"[^A-Za-z0-9 ._()+-]")


class Redacted(JSONResponse):
    """Every answer passes through redaction, whatever the route put in it."""

    def render(self, content: Any) -> bytes:
        return super().render(redact(content))


def _error(status: int, error: str) -> Redacted:
    return Redacted({"error": error}, status_code=status)


def _limit(request: Request) -> int | None:
    value = request.query_params.get("limit", "100")
    if not _DIGITS.fullmatch(value) or not 1 <= int(value) <= MAX_LIMIT:
        return None
    return int(value)


def _number(value: str, lowest: int = 1) -> int | None:
    return int(value) if _DIGITS.fullmatch(value) and lowest <= int(value) <= MAX_ID else None


def served_type(content_type: str) -> str:
    # Stored as parse() read it: lower-case, no spaces (Message.get_content_type).
    return content_type if content_type in SAFE_TYPES else "application/octet-stream"


def disposition(filename: str | None, n: int) -> str:
    """``attachment`` with the name twice: ASCII for old clients, UTF-8 (RFC 6266) for the rest;
    neither can hold a quote, a CR or an LF, nor a live reply token (a saved notification)."""
    name = redact_text(filename) if filename else f"attachment-{n}"
    fallback = _NOT_IN_FALLBACK.sub("_", name).strip() or f"attachment-{n}"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _is_text(content_type: str) -> bool:
    return content_type.startswith(("text/", "message/"))


MAX_CARRY = 1024 * 1024


async def redacted_chunks(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Text may quote a reply address (a forwarded notification): redacted like every answer.
    Cut only after whitespace, which no token or prefix holds, so none is split in two (a
    run of a megabyte without any is cut where it ends)."""
    carry = b""
    async for chunk in chunks:
        data = carry + chunk
        cut = max(data.rfind(b" "), data.rfind(b"\n"), data.rfind(b"\t"), data.rfind(b"\r")) + 1
        if cut == 0 and len(data) < MAX_CARRY:
            carry = data
            continue
        cut = cut or len(data)
        yield redact_bytes(data[:cut])
        carry = data[cut:]
    if carry:
        yield redact_bytes(carry)


def make_app(settings: Settings, sessions: Sessions) -> Starlette:
    store = blobs.for_settings(settings)

    async def health(request: Request) -> Response:
        return Redacted(
            {
                "status": "ok",
                "domain": settings.domain,
                "relay": "configured" if settings.relay else "none: outbound mail is held",
                "spam_scanning": "spamd" if settings.spamd else "off: mail is not scanned",
            }
        )

    async def messages(request: Request) -> Response:
        status_arg = request.query_params.get("status")
        if status_arg is not None and status_arg not in InboundStatus.__members__:
            known = ", ".join(InboundStatus.__members__)
            return _error(400, f"status must be one of: {known}")
        limit = _limit(request)
        if limit is None:
            return _error(400, f"limit must be a whole number from 1 to {MAX_LIMIT}")
        status = InboundStatus(status_arg) if status_arg else None
        async with sessions() as session:
            return Redacted(await views.inbox(session, status=status, limit=limit))

    async def message(request: Request) -> Response:
        inbound_id = _number(request.path_params["id"])
        data = None
        if inbound_id is not None:
            async with sessions() as session:
                data = await views.inbound_one(session, inbound_id)
        if data is None:
            return _error(404, "no such message")
        return Redacted(data)

    async def conversation(request: Request) -> Response:
        key = request.path_params["key"]
        data = None
        if len(key) <= MAX_KEY and "\x00" not in key:  # PostgreSQL text never holds NUL
            async with sessions() as session:
                data = await views.conversation(session, key)
        if data is None:
            return _error(404, "no such conversation")
        return Redacted(data)

    async def outbox(request: Request) -> Response:
        limit = _limit(request)
        if limit is None:
            return _error(400, f"limit must be a whole number from 1 to {MAX_LIMIT}")
        async with sessions() as session:
            return Redacted(await views.outbox(session, limit=limit))

    async def attachment_list(request: Request) -> Response:
        inbound_id = _number(request.path_params["id"])
        data = None
        if inbound_id is not None:
            async with sessions() as session:
                data = await views.attachments(session, inbound_id)
        if data is None:
            return _error(404, "no such message")
        return Redacted(data)

    async def attachment(request: Request) -> Response:
        inbound_id = _number(request.path_params["id"])
        n = _number(request.path_params["n"], lowest=0)
        if inbound_id is None or n is None:
            return _error(404, "no such attachment")
        async with sessions() as session:
            found = await stored_attachments.one(session, inbound_id, n)
        if found is None:
            return _error(404, "no such attachment")
        if found.blob_key is None:
            return _error(410, "this attachment was removed by retention")
        try:
            chunks = await store.reader(found.blob_key)
        except FileNotFoundError:
            log.error("inbound %s attachment %s: blob %s is missing", inbound_id, n, found.blob_key)
            return _error(500, "the attachment's bytes are missing from the blob store")
        return StreamingResponse(
            redacted_chunks(chunks) if _is_text(found.content_type) else chunks,
            media_type=served_type(found.content_type),
            headers={
                "content-disposition": disposition(found.filename, n),
                "x-content-type-options": "nosniff",
                "content-security-policy": "default-src 'none'; sandbox",
                "cache-control": "private, no-store",
            },
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        # Unknown routes and methods: JSON like every other answer, never an HTML page.
        assert isinstance(exc, HTTPException)
        return Redacted({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/api/messages", messages),
            Route("/api/messages/{id}", message),
            Route("/api/conversations/{key:path}", conversation),
            Route("/api/outbox", outbox),
            Route("/api/inbound/{id}/attachments", attachment_list),
            Route("/api/inbound/{id}/attachments/{n}", attachment),
        ],
        middleware=[Middleware(Guard, settings=settings)],
        exception_handlers={HTTPException: http_error},
    )
