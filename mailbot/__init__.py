"""mailbot: email-driven reply and command bots.

What a bot author needs is importable from here; see :class:`mailbot.Bot` for an example.
The names load on first use (PEP 562): importing one module of the package (the SMTP
policy, the MIME parser) does not load the Bot API and the outbox with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

try:  # the installed distribution's version (pyproject.toml), e.g. "0.1.0"
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("mailbot-server")
except PackageNotFoundError:  # run from a tree that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from mailbot.app import Mailbot
    from mailbot.bot import Bot, Context, InboundMail, MailAttachment, SenderPolicy
    from mailbot.commands.declare import CommandError, command
    from mailbot.config import Settings
    from mailbot.errors import Bounce, ConfigError, MailbotError, Rejection
    from mailbot.outbound.rendering import OutgoingFile
    from mailbot.parse import ParsedMail
    from mailbot.routing import Matcher, Route, Router
    from mailbot.serve import running
    from mailbot.status import InboundStatus, OutboundStatus
    from mailbot.store.conversations import display_name, title
    from mailbot.store.models import Comment, Conversation, OutboundMessage, Participant

_HOMES = {
    "Bot": "mailbot.bot",
    "Bounce": "mailbot.errors",
    "CommandError": "mailbot.commands.declare",
    "Comment": "mailbot.store.models",
    "ConfigError": "mailbot.errors",
    "Context": "mailbot.bot",
    "Conversation": "mailbot.store.models",
    "InboundMail": "mailbot.bot",
    "InboundStatus": "mailbot.status",
    "MailAttachment": "mailbot.bot",
    "Mailbot": "mailbot.app",
    "MailbotError": "mailbot.errors",
    "Matcher": "mailbot.routing",
    "OutboundMessage": "mailbot.store.models",
    "OutboundStatus": "mailbot.status",
    "OutgoingFile": "mailbot.outbound.rendering",
    "ParsedMail": "mailbot.parse",
    "Participant": "mailbot.store.models",
    "Rejection": "mailbot.errors",
    "Route": "mailbot.routing",
    "Router": "mailbot.routing",
    "SenderPolicy": "mailbot.bot",
    "Settings": "mailbot.config",
    "command": "mailbot.commands.declare",
    "display_name": "mailbot.store.conversations",
    "running": "mailbot.serve",
    "title": "mailbot.store.conversations",
}

__all__ = [
    "Bot",
    "Bounce",
    "CommandError",
    "Comment",
    "ConfigError",
    "Context",
    "Conversation",
    "InboundMail",
    "InboundStatus",
    "MailAttachment",
    "Mailbot",
    "MailbotError",
    "Matcher",
    "OutboundMessage",
    "OutboundStatus",
    "OutgoingFile",
    "ParsedMail",
    "Participant",
    "Rejection",
    "Route",
    "Router",
    "SenderPolicy",
    "Settings",
    "command",
    "display_name",
    "running",
    "title",
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
