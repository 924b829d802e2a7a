"""Inbound messages over HTTP: list and search, one message, its raw source, its HTML body
(sanitised), its timeline and its attachments; and the outbox.

Attachments and the raw source are served as inert text or downloads, never as pages: a
Content-Type only from :data:`SAFE_TYPES` (else ``application/octet-stream``: no HTML or SVG
runs from here), ``nosniff`` and a CSP that allows nothing. The HTML body is cleaned by nh3
and served under a CSP that runs no script and loads nothing from elsewhere, for a sandboxed
iframe on the message page.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import nh3
from fastapi import APIRouter, Query
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response, StreamingResponse

from mailbot.config import Settings
from mailbot.redact import redact_addresses, redact_bytes, redact_text
from mailbot.store import attachments as stored_attachments
from mailbot.store import blobs, spool
from mailbot.store.db import Sessions
from mailbot.store.models import InboundStatus, OutboundStatus
from mailbot.web import raw_source, search, shapes, views
from mailbot.web.answers import ID_PATTERN, MAX_LIMIT, error, limit, number

log = logging.getLogger(__name__)
T = TypeVar("T")

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
INERT = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; sandbox",
    "cache-control": "private, no-store",
}
# The HTML body: inline styles and data: images only; no script, no request anywhere, and a
# sandbox even if the iframe's own attribute were lost. Only our own page may frame it.
HTML_BODY_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
    "form-action 'none'; frame-ancestors 'self'; sandbox"
)
MAX_CARRY = 1024 * 1024
MAX_HTML = 256 * 1024  # characters of HTML body the page shows (about 1 s of nh3 at worst)
CLEAN_SECONDS = 10.0
StatusArg = Annotated[str | None, Query(description="only this status", max_length=30)]
LimitArg = Annotated[
    str, Query(alias="limit", description=f"how many, 1 to {MAX_LIMIT}", max_length=10)
]
SearchArg = Annotated[
    str | None,
    Query(
        description="Mailpit-style search: from: to: subject: status: bot: conversation: "
        "has:attachment before:YYYY-MM-DD after:YYYY-MM-DD, and free words",
        max_length=search.MAX_QUERY,
    ),
]
BeforeArg = Annotated[
    str | None, Query(description="page on: only ids below this one", pattern=ID_PATTERN)
]


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


async def redacted_chunks(
    chunks: AsyncIterator[bytes], redact: Callable[[bytes], bytes] = redact_bytes
) -> AsyncIterator[bytes]:
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
        yield redact(data[:cut])
        carry = data[cut:]
    if carry:
        yield redact(carry)


async def redacted_text_chunks(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A text attachment, redacted in its own encoding: UTF-16 text (a BOM, or every other
    byte NUL, as Windows tools write it) hides ``reply+`` from a byte search, so it is
    decoded, redacted as text and encoded again; anything else as bytes."""
    first = b""
    async for chunk in chunks:
        first += chunk
        if len(first) >= 64:
            break
    codec = _utf16(first)
    rest = _chained(first, chunks)
    if codec is None:
        async for piece in redacted_chunks(rest):
            yield piece
        return
    decoder = codecs.getincrementaldecoder(codec)("replace")
    encoder = codecs.getincrementalencoder(codec)()
    async for piece in redacted_chunks(_recoded(rest, decoder)):
        yield encoder.encode(piece.decode("utf-8", "surrogatepass"))


def _utf16(head: bytes) -> str | None:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"  # the BOM says the byte order, and is written again
    even, odd = head[0:64:2], head[1:64:2]
    if len(head) >= 16 and odd.count(0) > len(odd) * 0.6 and even.count(0) == 0:
        return "utf-16-le"
    if len(head) >= 16 and even.count(0) > len(even) * 0.6 and odd.count(0) == 0:
        return "utf-16-be"
    return None


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


async def _recoded(
    chunks: AsyncIterator[bytes], decoder: codecs.IncrementalDecoder
) -> AsyncIterator[bytes]:
    # As UTF-8, so the byte-wise redaction (and its cut at whitespace) applies unchanged.
    async for chunk in chunks:
        yield decoder.decode(chunk).encode("utf-8", "surrogatepass")
    yield decoder.decode(b"", final=True).encode("utf-8", "surrogatepass")


def clean_html(html: str) -> str:
    """The body as a page may show it: nh3 (ammonia) keeps formatting and drops scripts,
    event handlers, forms, ``<style>``/``<meta>``/``<base>`` and every URL scheme but web
    links and mail addresses; links open elsewhere and tell nothing of where they came from.
    The CSP it is served under blocks what is left (remote images, CSS ``url()``)."""
    cleaned = nh3.clean(
        html,
        url_schemes={"http", "https", "mailto", "data"},
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        attribute_filter=_no_remote_images,
    )
    return redact_text(cleaned)


def _no_remote_images(tag: str, attribute: str, value: str) -> str | None:
    """An image from elsewhere tells its sender the mail was read, and from where: dropped
    (the CSP would block it too). Only links may point away, and only ``<img>`` may hold
    ``data:``."""
    if attribute == "src" or attribute == "srcset":
        return value if tag == "img" and value.startswith("data:image/") else None
    if attribute == "href" and value.strip().lower().startswith("data:"):
        return None
    return value


def router(settings: Settings, sessions: Sessions) -> APIRouter:
    store = blobs.for_settings(settings)
    api = APIRouter(prefix="/api", tags=["messages"])

    async def one(id: str, view: Callable[[AsyncSession, int], Awaitable[T]]) -> T | None:  # noqa: A002
        """``view`` of the message with this path id; None for an id that cannot be one."""
        inbound_id = number(id)
        if inbound_id is None:
            return None
        async with sessions() as session:
            return await view(session, inbound_id)

    @api.get("/messages", response_model=list[shapes.Message], response_model_exclude_unset=True)
    async def messages(
        status: StatusArg = None,
        limit_: LimitArg = "100",
        q: SearchArg = None,
        before: BeforeArg = None,
    ) -> Any:
        """Inbound messages, newest first, as the inbox shows them; page on with ``before``."""
        if status is not None and status not in InboundStatus.__members__:
            known = ", ".join(InboundStatus.__members__)
            return error(400, f"status must be one of: {known}")
        count = limit(limit_)
        if count is None:
            return error(400, f"limit must be a whole number from 1 to {MAX_LIMIT}")
        found = search.where(search.parse_query(q)) if q else None
        async with sessions() as session:
            return await views.inbox(
                session,
                status=InboundStatus(status) if status else None,
                limit=count,
                where=found,
                before_id=int(before) if before else None,
            )

    @api.get(
        "/messages/{id}",
        response_model=shapes.MessageDetail,
        response_model_exclude_unset=True,
        responses={404: {"description": "no such message"}},
    )
    async def message(id: str) -> Any:  # noqa: A002 - the path's own name
        """One message, with the full parsed JSON and its attachments."""
        data = await one(id, views.inbound_one)
        return data if data is not None else error(404, "no such message")

    @api.get(
        "/messages/{id}/timeline",
        response_model=shapes.Timeline,
        response_model_exclude_unset=True,
        responses={404: {"description": "no such message"}},
    )
    async def timeline(id: str) -> Any:  # noqa: A002
        """Each stage the message went through, with its time and result, and each mail
        sent because of it."""
        data = await one(id, views.timeline)
        return data if data is not None else error(404, "no such message")

    @api.get(
        "/messages/{id}/raw",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}, 404: {}, 410: {}},
    )
    async def raw(id: str) -> Response:  # noqa: A002
        """The message as received, as plain text (reply addresses redacted)."""
        inbound_id = number(id)
        if inbound_id is None:
            return error(404, "no such message")
        try:
            data = await spool.load_raw(sessions, inbound_id, store)
        except LookupError as missing:
            gone = "retention" in str(missing)
            return error(
                410 if gone else 404, "raw removed by retention" if gone else "no such message"
            )
        shown = await raw_source.shown(data)
        return Response(shown, media_type="text/plain; charset=utf-8", headers=INERT)

    @api.get(
        "/messages/{id}/html",
        response_class=Response,
        responses={200: {"content": {"text/html": {}}}, 404: {}},
    )
    async def html(id: str) -> Response:  # noqa: A002
        """The HTML body, sanitised, for a sandboxed iframe: no script, nothing remote."""
        data = await one(id, views.inbound_one)
        body = ((data or {}).get("parsed") or {}).get("html")
        if data is None or body is None:
            return error(404, "no HTML body")
        if len(body) > MAX_HTML:
            # nh3's parser slows quadratically on some markup: a bigger body is not shown.
            body = (
                f"<p>The HTML body is {len(body) // 1024} KiB, more than this page shows "
                f"({MAX_HTML // 1024} KiB). The raw source has it.</p>"
            )
        try:
            async with asyncio.timeout(CLEAN_SECONDS):
                cleaned = await asyncio.to_thread(clean_html, body)  # nh3 frees the GIL
        except TimeoutError:
            return error(503, "cleaning this HTML body took too long; the raw source has it")
        page = f"<!doctype html><meta charset=utf-8><base target=_blank>{cleaned}"
        return Response(
            page,
            media_type="text/html; charset=utf-8",
            headers={
                "content-security-policy": HTML_BODY_CSP,
                "x-content-type-options": "nosniff",
                "x-frame-options": "SAMEORIGIN",
                "referrer-policy": "no-referrer",
                "cache-control": "private, no-store",
            },
        )

    @api.get(
        "/outbox",
        tags=["outbox"],
        response_model=list[shapes.Outbound],
        response_model_exclude_unset=True,
    )
    async def outbox(status: StatusArg = None, limit_: LimitArg = "100") -> Any:
        """Outbound mail with its delivery status, newest first."""
        count = limit(limit_)
        if count is None:
            return error(400, f"limit must be a whole number from 1 to {MAX_LIMIT}")
        if status is not None and status not in OutboundStatus.__members__:
            return error(400, f"status must be one of: {', '.join(OutboundStatus)}")
        async with sessions() as session:
            wanted = OutboundStatus(status) if status else None
            return await views.outbox(session, status=wanted, limit=count)

    @api.get(
        "/inbound/{id}/attachments",
        response_model=list[shapes.Attachment],
        response_model_exclude_unset=True,
        responses={404: {}},
    )
    async def attachment_list(id: str) -> Any:  # noqa: A002
        """A message's attachments: name, type, size, where to fetch it."""
        data = await one(id, views.attachments)
        return data if data is not None else error(404, "no such message")

    @api.get("/inbound/{id}/attachments/{n}", response_class=Response, responses={404: {}, 410: {}})
    async def attachment(id: str, n: str) -> Response:  # noqa: A002
        """One attachment's bytes, streamed from the blob store, as a download."""
        inbound_id, position = number(id), number(n, lowest=0)
        if inbound_id is None or position is None:
            return error(404, "no such attachment")
        async with sessions() as session:
            found = await stored_attachments.one(session, inbound_id, position)
        if found is None:
            return error(404, "no such attachment")
        if found.blob_key is None:
            return error(410, "this attachment was removed by retention")
        try:
            chunks = await store.reader(found.blob_key)
        except FileNotFoundError:
            log.error("inbound %s attachment %s: blob %s is missing", id, n, found.blob_key)
            return error(500, "the attachment's bytes are missing from the blob store")
        return StreamingResponse(
            # Text: every form of a token. Other bytes (an .eml sent as octet-stream): only
            # written-out addresses, since a bare 32-letter word in a file may be anything.
            redacted_text_chunks(chunks)
            if _is_text(found.content_type)
            else redacted_chunks(chunks, redact_addresses),
            media_type=served_type(found.content_type),
            headers={"content-disposition": disposition(found.filename, position), **INERT},
        )

    return api
