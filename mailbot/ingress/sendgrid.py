"""``POST /ingress/sendgrid``: mail SendGrid received, posted by its Inbound Parse webhook.

Inbound Parse has two ways to prove a post is SendGrid's: OAuth (SendGrid fetches a token
from a server you run) and a signature. mailbot takes the signature: a security policy with
signature verification, attached to the parse setting, makes SendGrid sign each post with
ECDSA (P-256, SHA-256) over the ``X-Twilio-Email-Event-Webhook-Timestamp`` header followed
by the raw body, the signature in ``X-Twilio-Email-Event-Webhook-Signature`` (base64
DER); the policy's public key is ``sendgrid_public_key``. Unlike a password in the URL it
covers the body (a post cannot be altered on the way) and nothing secret travels. A
missing or wrong signature is 401 and nothing is stored; a timestamp more than five minutes
from our clock, or the same signed post again, is a replay (403).

The parse setting must have "POST the raw, full MIME message" on: the message is then the
``email`` field, the envelope the ``envelope`` JSON field (``to``, ``from``), and the
sending client's address ``sender_ip`` (SPF is checked against it). SendGrid retries any
answer but 2xx for three days; a refusal here is 422 and ends no sooner.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from mailbot.config import Settings
from mailbot.errors import ConfigError
from mailbot.ingress.intake import (
    BIG,
    Intake,
    Refused,
    Replays,
    answer,
    fresh,
    ip_or_none,
    read_body,
    read_form,
    text,
)
from mailbot.web.answers import error

log = logging.getLogger(__name__)

PATH = "/ingress/sendgrid"
SIGNATURE = "x-twilio-email-event-webhook-signature"
TIMESTAMP = "x-twilio-email-event-webhook-timestamp"
REFUSED = 422


def public_key(given: str | None) -> ec.EllipticCurvePublicKey:
    """The policy's public key, as SendGrid shows it (base64 DER) or as PEM."""
    value = (given or "").strip()
    try:
        if "BEGIN PUBLIC KEY" in value:
            key = serialization.load_pem_public_key(value.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(value, validate=True))
    except (ValueError, binascii.Error, TypeError):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(
            "MAILBOT_SENDGRID_PUBLIC_KEY is not an ECDSA public key: copy the public key of "
            "the Inbound Parse security policy (base64) as SendGrid shows it"
        )
    return key


def add(api: APIRouter, settings: Settings, intake: Intake) -> None:
    if not (settings.sendgrid_public_key or "").strip():
        return  # no route: 404
    key = public_key(settings.sendgrid_public_key)
    replays = Replays()

    @api.post(PATH, include_in_schema=False)
    async def sendgrid(request: Request) -> Response:
        timestamp = request.headers.get(TIMESTAMP, "").strip()
        signature = request.headers.get(SIGNATURE, "").strip()
        if not timestamp or not signature:
            log.warning("a SendGrid post without a signature")
            return error(401, "the SendGrid signature is missing")
        try:
            body = await read_body(request, intake.max_body, REFUSED)
        except Refused as refused:
            return error(refused.status, refused.words)
        digest = await _digest(timestamp.encode("latin-1", "replace"), body)
        if not _verified(key, signature, digest):
            log.warning("a SendGrid post with a bad signature")
            return error(401, "the SendGrid signature does not match")
        seen = digest.hex()
        if not fresh(timestamp) or not replays.claim(seen):
            log.warning("a SendGrid post replayed (old timestamp or the same post again)")
            return error(403, "a replay: signed too long ago, or this post was taken already")
        try:
            form = await read_form(request.headers.get("content-type", ""), body)
        except Refused as refused:
            return error(refused.status, refused.words)
        del body
        raw = form.get("email")
        if raw is None:
            return error(
                REFUSED,
                "no email field: turn on 'POST the raw, full MIME message' in the parse setting",
            )
        sender, recipients = _envelope(form.get("envelope"))
        client_ip = ip_or_none(text(form.get("sender_ip")))
        outcome = await intake.take("sendgrid", raw, sender, recipients, client_ip)
        if outcome.kind == "later":
            replays.release(seen)
        return answer(outcome, REFUSED)


async def _digest(timestamp: bytes, body: bytes) -> bytes:
    def digest() -> bytes:
        signed = hashlib.sha256(timestamp)
        signed.update(body)  # not joined: a big body is not copied
        return signed.digest()

    return await asyncio.to_thread(digest) if len(body) >= BIG else digest()


def _verified(key: ec.EllipticCurvePublicKey, signature: str, digest: bytes) -> bool:
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def _envelope(value: bytes | None) -> tuple[str, list[str]]:
    """``{"to": [...], "from": "..."}`` → (sender, recipients); nothing readable: ("", [])."""
    try:
        found = json.loads(value or b"")
    except (ValueError, RecursionError):
        return "", []
    if not isinstance(found, dict):
        return "", []
    to = found.get("to")
    listed = to if isinstance(to, list) else []
    recipients = [a.strip() for a in listed if isinstance(a, str) and a.strip()]
    sender = found.get("from")
    return (sender.strip() if isinstance(sender, str) else ""), recipients
