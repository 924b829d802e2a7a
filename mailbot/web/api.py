"""The HTTP side as one FastAPI app: the page, the JSON API and its OpenAPI description.

GET  /                                   the live inbox (mailbot/web/pages.py)
GET  /messages/{id}                      one message's page
GET  /docs, /openapi.json                the API, described from its typed routes
GET  /health, /health/live, /health/ready, /metrics (Prometheus)
     /api/...                            messages, conversations, outbox, operator actions
WS   /api/live                           every change to the inbox, as it happens (live.py)

Closed by default (mailbot/web/guard.py): a Host allow-list, an Origin check on everything
that writes or listens live, and a bearer token when one is set. Bad parameters are 400 and
unknown ids 404, always as ``{"error": ...}``; every JSON answer is redacted
(mailbot/redact.py), so no live reply token or VERP id is shown, except the one address
``POST .../reply-address`` mints for the app that asked.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import func, select
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import Response

from mailbot.config import Settings
from mailbot.status import IN_FLIGHT_INBOUND
from mailbot.store.db import Sessions
from mailbot.store.models import InboundMessage
from mailbot.web import (
    conversations,
    inspector,
    live,
    login,
    messages,
    metrics,
    operate,
    pages,
    shapes,
    stats,
    unsubscribe,
)
from mailbot.web.answers import Redacted, error
from mailbot.web.guard import Guard

READY_BACKLOG = 10_000  # more messages waiting than this: not ready for more


def make_app(
    settings: Settings,
    sessions: Sessions,
    feed: live.Feed | None = None,
    bots: frozenset[str] | None = None,
    temporary: Mapping[str, str] | None = None,
    ingress: APIRouter | None = None,
) -> FastAPI:
    """The HTTP app; ``bots``: the bot names a new conversation may name (None: any);
    ``temporary``: bot name → the subdomain of its temporary addresses (the inspector);
    ``ingress``: the providers' inbound webhooks (mailbot/ingress/), when any is set up."""
    app = FastAPI(
        title="mailbot",
        summary="Reply by email: the inbox, conversations and outbox of one mailbot node.",
        version="1",
        default_response_class=Redacted,
        # FastAPI's own /docs and /redoc load their scripts from a CDN: ours are served from
        # this node (mailbot/web/pages.py), under the page's CSP.
        docs_url=None,
        redoc_url=None,
        middleware=[Middleware(Guard, settings=settings, sessions=sessions)],
    )
    started = time.monotonic()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # Unknown routes and methods: JSON like every other answer, never an HTML page.
        return Redacted({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
            for e in exc.errors()
        ]
        return error(400, "; ".join(problems) or "bad request")

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        # Logged with its traceback by the server; the client learns nothing of the inside.
        return error(500, "internal error")

    @app.get("/health", tags=["health"], response_model=shapes.Health)
    async def health() -> Any:
        """What is (not) configured; answers without a token."""
        return {
            "status": "ok",
            "domain": settings.domain,
            "relay": "configured" if settings.relay else "none: outbound mail is held",
            "spam_scanning": "spamd" if settings.spamd else "off: mail is not scanned",
        }

    @app.get("/health/live", tags=["health"], response_model=shapes.Live)
    async def health_live() -> Any:
        """The process answers."""
        return {"status": "ok", "uptime_seconds": round(time.monotonic() - started, 1)}

    @app.get(
        "/health/ready",
        tags=["health"],
        response_model=shapes.Ready,
        responses={503: {"description": "not ready"}},
    )
    async def health_ready() -> Any:
        """The database answers and the backlog of unprocessed mail is not out of hand."""
        try:
            async with sessions() as session:
                waiting = await session.scalar(
                    select(func.count()).where(InboundMessage.status.in_(IN_FLIGHT_INBOUND))
                )
        except Exception as exc:  # noqa: BLE001 - any database failure means not ready
            return error(503, f"the database does not answer: {type(exc).__name__}")
        backlog = int(waiting or 0)
        if backlog > READY_BACKLOG:
            return error(503, f"{backlog} messages wait to be processed")
        return Redacted({"status": "ok", "backlog": backlog})

    app.include_router(messages.router(settings, sessions))
    app.include_router(conversations.router(settings, sessions, bots))
    app.include_router(operate.router(settings, sessions))
    app.include_router(stats.router(sessions))
    app.include_router(metrics.router(settings, sessions))
    app.include_router(live.router(settings, sessions, feed))
    app.include_router(login.router(settings, sessions))
    app.include_router(unsubscribe.router(settings, sessions))
    app.include_router(inspector.router(settings, sessions, temporary or {}))
    app.include_router(pages.router())
    if ingress is not None:
        app.include_router(ingress)
    return app
