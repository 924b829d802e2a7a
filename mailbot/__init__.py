"""mailbot: email-driven reply and command bots.

What a bot author needs is importable from here; see :class:`mailbot.Bot` for an example.
"""

from mailbot.app import Mailbot
from mailbot.bot import Bot, Context, InboundMail, SenderPolicy
from mailbot.config import Settings
from mailbot.errors import Bounce, ConfigError, MailbotError, Rejection
from mailbot.parse import ParsedMail
from mailbot.routing import Router

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
