"""mailbot's exceptions, in one place.

::

    MailbotError
    ├── ConfigError          settings or installation are wrong; raised at start, never later
    ├── Rejection            the message is refused for good: status ``rejected`` + reason
    │   └── Bounce           a bot hook refused it (``self.bounce(reason)``)
    ├── TransientError       try again later: status back to ``pending`` with backoff
    └── DeliveryError        outbound delivery failed; ``permanent`` says whether to retry
"""

from __future__ import annotations


class MailbotError(Exception):
    """Base of everything mailbot raises on purpose."""


class ConfigError(MailbotError):
    pass


class Rejection(MailbotError):
    """A message that will never be acted on; ``reason`` is stored and shown to people."""

    status = "rejected"

    def __init__(self, reason: str, *, code: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code  # a short machine-readable word: not_owner, empty_reply, ...


class Bounce(Rejection):
    """A bot refused the mail (Action Mailbox's ``bounce``): status ``bounced``."""

    status = "bounced"


class TransientError(MailbotError):
    pass


class DeliveryError(MailbotError):
    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
