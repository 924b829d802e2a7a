"""``POST /ingress/mailgun/messages.mime``: mail Mailgun received, from a route's
``forward()``.

A route's forward URL that ends in ``mime`` makes Mailgun post the message as it came, in
the ``body-mime`` field, with the envelope (``recipient``, ``sender``) beside it. Mailgun
signs each post: ``signature`` is the hex HMAC-SHA256, under the account's HTTP webhook
signing key, of ``timestamp`` and ``token`` joined. A post whose signature does not match
is refused (401) and nothing is stored; a timestamp more than five minutes from our clock,
or a token already taken, is a replay (403). Mailgun retries anything but 200 and 406 for
eight hours, so a refusal that would be the same next time is 406.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from mailbot.config import Settings
from mailbot.ingress.intake import (
    Intake,
    Refused,
    Replays,
    answer,
    fresh,
    read_body,
    read_form,
    secret_of,
)
from mailbot.ingress.intake import text as field_text
from mailbot.web.answers import error

log = logging.getLogger(__name__)

PATH = "/ingress/mailgun/messages.mime"
NOT_ACCEPTABLE = 406  # Mailgun's "rejected: do not retry"


def add(api: APIRouter, settings: Settings, intake: Intake) -> None:
    signing_key = secret_of(settings.mailgun_signing_key)
    if signing_key is None:
        return  # no route: 404
    key = signing_key.encode()
    replays = Replays()

    @api.post(PATH, include_in_schema=False)
    async def mailgun(request: Request) -> Response:
        try:
            body = await read_body(request, intake.max_body, NOT_ACCEPTABLE)
            form = await read_form(request.headers.get("content-type", ""), body)
        except Refused as refused:
            return error(refused.status, refused.words)
        del body
        timestamp, token = field_text(form.get("timestamp")), field_text(form.get("token"))
        signed = hmac.new(key, (timestamp + token).encode(), hashlib.sha256).hexdigest()
        given = field_text(form.get("signature")).lower().encode("ascii", "replace")
        if not token or not hmac.compare_digest(signed.encode(), given):
            log.warning("a Mailgun post with a bad signature from %s", _client(request))
            return error(401, "the Mailgun signature is missing or does not match")
        if not fresh(timestamp) or not replays.claim(token):
            log.warning("a Mailgun post replayed (old timestamp or token seen)")
            return error(403, "a replay: signed too long ago, or this token was taken already")
        raw = form.get("body-mime")
        if raw is None:
            return error(
                NOT_ACCEPTABLE,
                f"no body-mime field: point the route's forward() at a URL ending in {PATH}",
            )
        recipients = [a.strip() for a in field_text(form.get("recipient")).split(",") if a.strip()]
        sender = field_text(form.get("sender"))
        outcome = await intake.take("mailgun", raw, sender, recipients, None)
        if outcome.kind == "later":
            replays.release(token)  # the same post may come back, and must be taken then
        return answer(outcome, NOT_ACCEPTABLE)


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "?"
