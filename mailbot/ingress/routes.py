"""The ingress routes of one node: each provider's, when its credential is set."""

from __future__ import annotations

from fastapi import APIRouter

from mailbot.config import Settings
from mailbot.ingress import mailgun, postmark, sendgrid
from mailbot.ingress.intake import Intake, secret_of
from mailbot.smtp.handler import ReceiveHandler


def wanted(settings: Settings) -> bool:
    """Whether any provider is set up (the node then builds its SMTP policy for HTTP too)."""
    return any(
        (
            secret_of(settings.mailgun_signing_key),
            secret_of(settings.postmark_password),
            (settings.sendgrid_public_key or "").strip(),
        )
    )


def check(settings: Settings) -> None:
    """Raise ConfigError for a credential that cannot be used (at start, and by `config
    check`), before anything listens."""
    postmark.password(settings)
    if (settings.sendgrid_public_key or "").strip():
        sendgrid.public_key(settings.sendgrid_public_key)


def router(settings: Settings, handler: ReceiveHandler) -> APIRouter:
    """The routes; a provider's credential that cannot be used is a ConfigError now."""
    api = APIRouter(tags=["ingress"])
    intake = Intake(settings, handler)
    for provider in (mailgun, postmark, sendgrid):
        provider.add(api, settings, intake)
    return api
