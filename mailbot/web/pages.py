"""The pages: an inbox that fills itself as mail arrives, one page per message (with the
quarantine actions), the conversations with their reply addresses, and the outbox.

Plain HTML, CSS and JavaScript from ``static/`` (no build step, nothing loaded from
elsewhere), served under a Content-Security-Policy that allows only our own scripts and
styles. The pages read the JSON API and the live WebSocket like any other client, and put
every value into the page as text, never as markup.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle  # type: ignore[import-untyped]
from fastapi import APIRouter
from starlette.responses import FileResponse, Response

from mailbot.web.answers import error

STATIC = Path(__file__).resolve().parent / "static"
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "content-security-policy": PAGE_CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
ASSETS = {
    "app.js": "text/javascript",
    "message.js": "text/javascript",
    "common.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
    "conversations.js": "text/javascript",
    "outbox.js": "text/javascript",
    "login.js": "text/javascript",
    "docs.js": "text/javascript",
    "charts.js": "text/javascript",
}
# Swagger UI's own files, from the swagger-ui-bundle package: /docs loads nothing remote.
SWAGGER = Path(swagger_ui_bundle.swagger_ui_path)
SWAGGER_FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
# Swagger UI sets style attributes as it draws; scripts stay our own files only.
DOCS_CSP = PAGE_CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


def page(name: str) -> Response:
    return FileResponse(STATIC / name, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


def router() -> APIRouter:
    pages = APIRouter(include_in_schema=False)

    @pages.get("/")
    async def inbox() -> Response:
        return page("index.html")

    @pages.get("/messages/{id}")
    async def message(id: str) -> Response:  # noqa: A002 - the page reads the id itself
        return page("message.html")

    @pages.get("/conversations")
    async def conversations() -> Response:
        return page("conversations.html")

    @pages.get("/conversations/{key:path}")
    async def conversation(key: str) -> Response:
        return page("conversations.html")

    @pages.get("/outbox")
    async def outbox() -> Response:
        return page("outbox.html")

    @pages.get("/docs")
    async def docs() -> Response:
        return FileResponse(
            STATIC / "docs.html",
            media_type="text/html; charset=utf-8",
            headers={**PAGE_HEADERS, "content-security-policy": DOCS_CSP},
        )

    @pages.get("/docs-assets/{name}")
    async def docs_asset(name: str) -> Response:
        if name not in SWAGGER_FILES:
            return error(404, "no such file")
        return FileResponse(
            SWAGGER / name, media_type=f"{SWAGGER_FILES[name]}; charset=utf-8", headers=PAGE_HEADERS
        )

    @pages.get("/static/{name}")
    async def asset(name: str) -> Response:
        if name not in ASSETS:
            return error(404, "no such file")
        kind = ASSETS[name]
        return FileResponse(
            STATIC / name, media_type=f"{kind}; charset=utf-8", headers=PAGE_HEADERS
        )

    return pages
