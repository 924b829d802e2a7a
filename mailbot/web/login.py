"""Logging in to the page where it needs a token (off loopback, or with MAILBOT_API_TOKEN).

GET    /login          the form
POST   /api/session    ``{"token": ...}`` → the page's cookie: HttpOnly (no script reads it),
                       SameSite=Strict (no other site's page sends it), Secure over HTTPS
DELETE /api/session    logs out: the cookie is cleared

The cookie holds the token itself, so revoking the token (``mailbot api-token revoke``)
logs out every page that used it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from mailbot.config import Settings
from mailbot.store.db import Sessions
from mailbot.web import shapes
from mailbot.web.answers import Redacted, error
from mailbot.web.guard import COOKIE, api_token, token_ok
from mailbot.web.pages import page

MAX_AGE = 30 * 24 * 3600


class Login(BaseModel):
    token: str = Field(min_length=1, max_length=200)


def router(settings: Settings, sessions: Sessions) -> APIRouter:
    api = APIRouter(tags=["session"])
    configured = api_token(settings)

    @api.get("/login", include_in_schema=False)
    async def form() -> Response:
        return page("login.html")

    @api.post("/api/session", response_model=shapes.Session, responses={401: {}})
    async def log_in(body: Login, request: Request) -> Any:
        """Check a token and keep it in the page's cookie."""
        if not await token_ok(configured, sessions, body.token.strip().encode()):
            return error(401, "that token is not valid (or was revoked)")
        answer = Redacted({"logged_in": True})
        answer.set_cookie(
            COOKIE.decode(),
            body.token.strip(),
            max_age=MAX_AGE,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return answer

    @api.delete("/api/session", response_model=shapes.Session)
    async def log_out() -> Any:
        """Forget the page's cookie."""
        answer = Redacted({"logged_in": False})
        answer.delete_cookie(COOKIE.decode(), httponly=True, samesite="strict")
        return answer

    return api
