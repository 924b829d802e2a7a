"""mailbot's exceptions, in one place.

::

    MailbotError
    ├── ConfigError          settings or installation are wrong; raised at start, never later
    ├── Rejection            the message is refused for good: status ``rejected`` + reason
    │   ├── Bounce           a bot hook refused it (``self.bounce(reason)``)
    │   ├── Quarantined      spam: status ``quarantined``, kept for release or deletion
    │   └── Unscanned        spamd was down: status ``unscanned``, rescanned when it is back
    ├── TransientError       try again later: status back to ``pending`` with backoff
    │   └── SpamdUnavailable spamd refused, timed out or answered an error
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


class Quarantined(Rejection):
    """Spam by the route's policy: never dispatched, kept until released or deleted."""

    status = "quarantined"


class Unscanned(Rejection):
    """Not dispatched yet: spamd could not scan it. Not final: it is scanned again later."""

    status = "unscanned"


class TransientError(MailbotError):
    pass


class SpamdUnavailable(TransientError):
    """spamd did not give a verdict (refused, timed out, or answered an error)."""


class DeliveryError(MailbotError):
    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
