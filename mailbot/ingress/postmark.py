"""``POST /ingress/postmark``: mail Postmark received, posted as JSON by its inbound webhook.

Postmark does not sign its inbound posts; it sends the HTTP Basic credentials written into
the webhook URL (``https://mailbot:PASSWORD@mail.example.org/ingress/postmark``), and that
is what is checked, in constant time, before the body is read: anything else is 401 and
nothing is stored. The message is ``RawEmail``, there only when the inbound stream's
"Include raw email content in JSON payload" is on. Without it the post is refused (422)
rather than rebuilt from the parsed fields: a message put together again from its text,
HTML and attachments is not the one that was sent (its DKIM signature no longer verifies,
the quoted part mailbot strips is gone), so the reply would be judged on something else.
The envelope recipient is ``OriginalRecipient``; the sender, the ``Return-Path`` Postmark
recorded. Postmark retries anything but 200 and 403, so a refusal that would be the same
next time is 403.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from mailbot import addresses
from mailbot.config import Settings
from mailbot.errors import ConfigError
from mailbot.ingress.intake import (
    BIG,
    Intake,
    Refused,
    answer,
    basic_auth_ok,
    read_body,
    secret_of,
)
from mailbot.web.answers import error

log = logging.getLogger(__name__)

PATH = "/ingress/postmark"
USER = "mailbot"
FORBIDDEN = 403  # Postmark's "stop retrying"
MIN_PASSWORD = 16


def password(settings: Settings) -> str | None:
    """The configured password (None: the route is off); one too short is a ConfigError."""
    found = secret_of(settings.postmark_password)
    if found is not None and len(found) < MIN_PASSWORD:
        raise ConfigError(
            f"MAILBOT_POSTMARK_PASSWORD is shorter than {MIN_PASSWORD} characters: use a "
            "random one, e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    return found


def add(api: APIRouter, settings: Settings, intake: Intake) -> None:
    secret = password(settings)
    if secret is None:
        return  # no route: 404

    @api.post(PATH, include_in_schema=False)
    async def postmark(request: Request) -> Response:
        if not basic_auth_ok(request, USER, secret):
            log.warning("a Postmark post without the right credentials")
            return error(401, "credentials needed", {"www-authenticate": 'Basic realm="mailbot"'})
        try:
            body = await read_body(request, intake.max_body, FORBIDDEN)
            post = await _json(body)
        except Refused as refused:
            return error(refused.status, refused.words)
        raw = post.get("RawEmail")
        if not isinstance(raw, str) or not raw:
            log.warning("a Postmark post without RawEmail: turn on raw email content")
            return error(
                422,
                "no RawEmail: turn on 'Include raw email content in JSON payload' in the "
                "inbound stream's settings (mailbot stores the message as sent, never a copy "
                "rebuilt from its parsed parts)",
            )
        recipient = post.get("OriginalRecipient")
        if not isinstance(recipient, str) or not recipient.strip():
            return error(FORBIDDEN, "no OriginalRecipient: the envelope recipient is unknown")
        message = raw.encode("utf-8", "replace")  # a lone surrogate from a JSON escape: "?"
        del raw, body
        outcome = await intake.take("postmark", message, _sender(post), [recipient.strip()], None)
        return answer(outcome, FORBIDDEN)


async def _json(body: bytes) -> dict[str, Any]:
    try:
        post = await asyncio.to_thread(json.loads, body) if len(body) >= BIG else json.loads(body)
    except (ValueError, RecursionError):
        raise Refused(400, "the body is not JSON") from None
    if not isinstance(post, dict):
        raise Refused(400, "the body is not a JSON object")
    return post


def _sender(post: dict[str, Any]) -> str:
    """The envelope sender: the Return-Path Postmark recorded, else the From address."""
    headers = post.get("Headers")
    for header in headers if isinstance(headers, list) else []:
        if isinstance(header, dict) and str(header.get("Name", "")).lower() == "return-path":
            value = str(header.get("Value", "")).strip().strip("<>").strip()
            return value if addresses.split(value)[1] else ""
    found = post.get("FromFull")
    email = found.get("Email") if isinstance(found, dict) else post.get("From")
    return email.strip() if isinstance(email, str) else ""
