"""mailbot: email-driven reply and command bots.

What a bot author needs is importable from here; see :class:`mailbot.Bot` for an example.
The names load on first use (PEP 562): importing one module of the package (the SMTP
policy, the MIME parser) does not load the Bot API and the outbox with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailbot.app import Mailbot
    from mailbot.bot import Bot, Context, InboundMail, SenderPolicy
    from mailbot.config import Settings
    from mailbot.errors import Bounce, ConfigError, MailbotError, Rejection
    from mailbot.parse import ParsedMail
    from mailbot.routing import Router

_HOMES = {
    "Bot": "mailbot.bot",
    "Bounce": "mailbot.errors",
    "ConfigError": "mailbot.errors",
    "Context": "mailbot.bot",
    "InboundMail": "mailbot.bot",
    "Mailbot": "mailbot.app",
    "MailbotError": "mailbot.errors",
    "ParsedMail": "mailbot.parse",
    "Rejection": "mailbot.errors",
    "Router": "mailbot.routing",
    "SenderPolicy": "mailbot.bot",
    "Settings": "mailbot.config",
}

__all__ = [
    "Bot",
    "Bounce",
    "ConfigError",
    "Context",
    "InboundMail",
    "Mailbot",
    "MailbotError",
    "ParsedMail",
    "Rejection",
    "Router",
    "SenderPolicy",
    "Settings",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'mailbot' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
