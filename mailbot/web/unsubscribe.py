"""``/unsubscribe/{ref}``: the one-click links in notifications (RFC 8058).

POST (what Gmail's and Yahoo's buttons send, and the page's own button) mutes the
participant the signed link names, in that conversation; GET only shows the button, since
link scanners and previews follow every link they see. A link that is not ours is a 404.
"""

from __future__ import annotations

import html

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from sqlalchemy import update

from mailbot.config import Settings
from mailbot.outbound.unsubscribe import participant_of
from mailbot.store.db import Sessions
from mailbot.store.models import Participant, utcnow

HEADERS = {"cache-control": "no-store", "content-security-policy": "default-src 'none'"}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    text = (
        "<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        f"<title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>{body}"
    )
    return HTMLResponse(text, status_code=status, headers=HEADERS)


def router(settings: Settings, sessions: Sessions) -> APIRouter:
    api = APIRouter(tags=["unsubscribe"])

    @api.get("/unsubscribe/{ref}", include_in_schema=False)
    async def ask(ref: str) -> HTMLResponse:
        if participant_of(settings, ref) is None:
            return _page("Unknown link", "<p>This unsubscribe link is not ours.</p>", 404)
        return _page(
            "Stop these emails?",
            "<p>You will get no more mail from this conversation. Your reply address keeps "
            "working, and writing /subscribe in a reply starts the mail again.</p>"
            "<form method=post><input type=hidden name=List-Unsubscribe value=One-Click>"
            "<button>Unsubscribe</button></form>",
        )

    @api.post("/unsubscribe/{ref}", include_in_schema=False)
    async def one_click(ref: str) -> HTMLResponse:
        participant_id = participant_of(settings, ref)
        if participant_id is None:
            return _page("Unknown link", "<p>This unsubscribe link is not ours.</p>", 404)
        async with sessions() as session, session.begin():
            await session.execute(
                update(Participant)
                .where(Participant.id == participant_id, Participant.muted_at.is_(None))
                .values(muted_at=utcnow())
            )
        return _page("Unsubscribed", "<p>You will get no more mail from this conversation.</p>")

    return api
