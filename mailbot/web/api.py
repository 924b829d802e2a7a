"""The JSON API: what the CLI's ``--json`` commands print, over HTTP.

GET /health                          liveness and what is (not) configured
GET /api/messages[?status=&limit=]   inbound messages, newest first
GET /api/messages/{id}               one, with the full parsed JSON
GET /api/conversations/{key}         a conversation with participants and comments
GET /api/outbox[?limit=]             outbound messages with their delivery status

Closed by default (mailbot/web/guard.py): a Host allow-list, and a bearer token when one is
set. Bad parameters are 400 and unknown ids 404, always as ``{"error": ...}``; every answer
is redacted (mailbot/redact.py), so no live reply token or VERP id is ever shown.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mailbot.config import Settings
from mailbot.redact import redact
from mailbot.store.db import Sessions
from mailbot.store.models import InboundStatus
from mailbot.web import views
from mailbot.web.guard import Guard

MAX_LIMIT = 1000
MAX_ID = 2**31 - 1  # ids are INTEGER columns; PostgreSQL's is 32-bit
MAX_KEY = 200  # Conversation.key's length
_DIGITS = re.compile(r"[0-9]{1,10}")  # ASCII only: int() also reads "٣", " 3" and "1_0"


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


def make_app(settings: Settings, sessions: Sessions) -> Starlette:
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
        raw_id = request.path_params["id"]
        data = None
        if _DIGITS.fullmatch(raw_id) and 1 <= int(raw_id) <= MAX_ID:
            async with sessions() as session:
                data = await views.inbound_one(session, int(raw_id))
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
        ],
        middleware=[Middleware(Guard, settings=settings)],
        exception_handlers={HTTPException: http_error},
    )
