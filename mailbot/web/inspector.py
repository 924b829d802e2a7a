"""``POST /api/inspector``: a temporary address to send mail to and watch (the inspector bot).

The answer is the one place the address is shown whole (it is a credential, like a reply
address); the inbox, filtered on its conversation, then shows what arrives, live.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mailbot.config import Settings
from mailbot.store import temporary
from mailbot.store.db import Sessions
from mailbot.web.answers import error

DAY = 86400


class Wanted(BaseModel):
    ttl_seconds: int = Field(3600, ge=60, le=7 * DAY, description="how long it takes mail")


class Made(BaseModel):
    address: str = Field(description="send mail here; it is not shown again")
    conversation: str = Field(description="the inbox filter conversation:<this> shows its mail")
    expires_at: str


def router(settings: Settings, sessions: Sessions, owners: Mapping[str, str]) -> APIRouter:
    """``owners``: bot name → the subdomain of its temporary addresses."""
    api = APIRouter(prefix="/api", tags=["inspector"])

    @api.post("/inspector", response_model=Made, status_code=201, responses={404: {}})
    async def make(wanted: Wanted) -> Any:
        """A new temporary address; mail to it is kept and shown, never answered."""
        if not owners:
            return error(404, "this node's app has no bot with temporary addresses")
        bot, subdomain = next(iter(owners.items()))
        async with sessions() as session, session.begin():
            made = await temporary.make(
                session,
                bot=bot,
                subdomain=subdomain,
                domain=settings.domain,
                ttl=timedelta(seconds=wanted.ttl_seconds),
            )
        body = Made(
            address=made.address, conversation=made.key, expires_at=made.expires_at.isoformat()
        )
        # Not Redacted: the address is what was asked for.
        return JSONResponse(
            body.model_dump(), status_code=201, headers={"cache-control": "no-store"}
        )

    return api
