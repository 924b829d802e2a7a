"""The JSON API: what the CLI's ``--json`` commands print, over HTTP.

GET /health                       liveness and what is (not) configured
GET /api/messages[?status=...]    inbound messages, newest first
GET /api/messages/{id}            one, with the full parsed JSON
GET /api/conversations/{key}      a conversation with participants and comments
GET /api/outbox                   outbound messages with their delivery status
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mailbot import conversations, views
from mailbot.config import Settings
from mailbot.db import Sessions
from mailbot.models import InboundStatus


def make_app(settings: Settings, sessions: Sessions) -> Starlette:
    async def health(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "domain": settings.domain,
                "relay": "configured" if settings.relay else "none: outbound mail is held",
                "spam_scanning": "spamd" if settings.spamd else "off: mail is not scanned",
            }
        )

    async def messages(request: Request) -> JSONResponse:
        status_arg = request.query_params.get("status")
        try:
            status = InboundStatus(status_arg) if status_arg else None
            limit = min(int(request.query_params.get("limit", "100")), 1000)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        async with sessions() as session:
            return JSONResponse(await views.inbox(session, status=status, limit=limit))

    async def message(request: Request) -> JSONResponse:
        async with sessions() as session:
            data = await views.inbound_one(session, int(request.path_params["id"]))
        if data is None:
            return JSONResponse({"error": "no such message"}, status_code=404)
        return JSONResponse(data)

    async def conversation(request: Request) -> JSONResponse:
        async with sessions() as session:
            found = await conversations.get(session, request.path_params["key"])
            if found is None:
                return JSONResponse({"error": "no such conversation"}, status_code=404)
            return JSONResponse(conversations.to_json(found))

    async def outbox(request: Request) -> JSONResponse:
        async with sessions() as session:
            return JSONResponse(await views.outbox(session))

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/api/messages", messages),
            Route("/api/messages/{id:int}", message),
            Route("/api/conversations/{key:path}", conversation),
            Route("/api/outbox", outbox),
        ]
    )
