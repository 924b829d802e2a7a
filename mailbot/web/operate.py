"""What an operator does from the page: quarantine (release, delete, teach spamd) and the
outbox (cancel, retry). Each is the same function the CLI calls (mailbot/spam/quarantine.py,
mailbot/outbound/operate.py); this module only answers in JSON.

POST   /api/quarantine/{id}/release     run it through the pipeline again, not quarantined
DELETE /api/quarantine/{id}             delete a quarantined message for good
POST   /api/messages/{id}/learn         teach spamd it is spam or ham (spamd's TELL)
POST   /api/outbox/{id}/cancel          a mail not sent yet is not sent
POST   /api/outbox/{id}/retry           a deferred, failed or suppressed mail is tried again
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel

from mailbot.config import Settings
from mailbot.errors import SpamdUnavailable
from mailbot.outbound import operate as outbox
from mailbot.spam import quarantine
from mailbot.spam.client import checker_for
from mailbot.store import blobs
from mailbot.store.db import Sessions
from mailbot.store.models import OutboundMessage
from mailbot.web import shapes, views
from mailbot.web.answers import error, number


class Learn(BaseModel):
    kind: Literal["spam", "ham"]


def router(settings: Settings, sessions: Sessions) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["operate"])
    store = blobs.for_settings(settings)
    gone: dict[int | str, dict[str, Any]] = {
        404: {"description": "no such message, or not in that state"}
    }

    @api.post(
        "/quarantine/{id}/release",
        response_model=shapes.MessageDetail,
        response_model_exclude_unset=True,
        responses=gone,
    )
    async def release(id: str) -> Any:  # noqa: A002 - the path's own name
        """Overrule the spam verdict: the message goes through the pipeline again."""
        inbound_id = number(id)
        if inbound_id is None:
            return error(404, "no such message")
        try:
            await quarantine.release(sessions, inbound_id)
        except LookupError as why:
            return error(404, str(why))
        async with sessions() as session:
            return await views.inbound_one(session, inbound_id)

    @api.delete("/quarantine/{id}", response_model=shapes.Deleted, responses=gone)
    async def delete(id: str) -> Any:  # noqa: A002
        """Delete a quarantined message for good."""
        inbound_id = number(id)
        if inbound_id is None:
            return error(404, "no such message")
        try:
            await quarantine.delete(sessions, inbound_id)
        except LookupError as why:
            return error(404, str(why))
        return {"deleted": inbound_id}

    @api.post(
        "/messages/{id}/learn",
        response_model=shapes.Learned,
        response_model_exclude_unset=True,
        responses={**gone, 409: {}, 503: {}},
    )
    async def learn(id: str, body: Learn) -> Any:  # noqa: A002
        """Teach spamd's Bayes filter that a stored message is spam or ham."""
        inbound_id = number(id)
        checker = checker_for(settings)
        if inbound_id is None:
            return error(404, "no such message")
        if checker is None:
            return error(409, "MAILBOT_SPAMD is unset: there is no spamd to teach")
        try:
            learned = await quarantine.learn(sessions, checker, inbound_id, body.kind, store)
        except LookupError as why:
            return error(404, str(why))
        except SpamdUnavailable as why:
            return error(503, str(why))
        return {"id": inbound_id, **learned}

    @api.post(
        "/outbox/{id}/cancel",
        tags=["outbox"],
        response_model=shapes.Outbound,
        response_model_exclude_unset=True,
        responses={**gone, 409: {}},
    )
    async def cancel(id: str) -> Any:  # noqa: A002
        """A mail not sent yet (held, queued, deferred) is not sent; it becomes ``failed``."""
        return await _on_outbound(id, outbox.cancel)

    @api.post(
        "/outbox/{id}/retry",
        tags=["outbox"],
        response_model=shapes.Outbound,
        response_model_exclude_unset=True,
        responses={**gone, 409: {}},
    )
    async def retry(id: str) -> Any:  # noqa: A002
        """Try a deferred, held, failed or suppressed mail again now, with a new lifetime (a
        fresh reply address if its old one was scrubbed; a bounced participant unsuspended)."""
        return await _on_outbound(id, lambda s, i: outbox.retry(s, settings, i))

    async def _on_outbound(
        id: str,  # noqa: A002
        action: Callable[[Sessions, int], Awaitable[OutboundMessage]],
    ) -> Any:
        outbound_id = number(id)
        if outbound_id is None:
            return error(404, "no such outbound message")
        try:
            row = await action(sessions, outbound_id)
        except LookupError as why:
            return error(404, str(why))
        except ValueError as why:
            return error(409, str(why))
        return views.outbound_json(row)

    return api
