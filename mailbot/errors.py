"""mailbot's exceptions, in one place.

::

    MailbotError
    ├── ConfigError          settings or installation are wrong; raised at start, never later
    ├── Rejection            the message is refused: status ``rejected`` + reason + code
    │   ├── Bounce           a bot hook refused it (``self.bounce(reason)``)
    │   ├── Quarantined      spam: status ``quarantined``, kept for release or deletion
    │   └── Unscanned        spamd was down: status ``unscanned``, rescanned when it is back
    ├── TransientError       try again later: status back to ``pending`` with backoff
    │   └── SpamdUnavailable spamd refused, timed out or answered an error
    ├── Busy                 a row another transaction holds, not waited for: handed back
    └── DeliveryError        outbound delivery failed; ``permanent`` says whether to retry

A refusal is final or not by its status (:data:`mailbot.status.FINAL_INBOUND`): only
``unscanned`` is not, so only final refusals are explained to their sender.
"""

from __future__ import annotations

from typing import ClassVar

from mailbot.status import FINAL_INBOUND, InboundStatus, RefusalCode


class MailbotError(Exception):
    """Base of everything mailbot raises on purpose."""


class ConfigError(MailbotError):
    pass


class Rejection(MailbotError):
    """A message that is not acted on; ``reason`` is stored and shown to people."""

    status: ClassVar[InboundStatus] = InboundStatus.rejected

    def __init__(self, reason: str, *, code: RefusalCode | str = RefusalCode.rejected) -> None:
        super().__init__(reason)
        self.reason = reason
        # A short machine-readable word; a str that is not a RefusalCode is a bug (ValueError).
        self.code = RefusalCode(code)

    @property
    def final(self) -> bool:
        """False when the message will be decided again later (``unscanned``)."""
        return self.status in FINAL_INBOUND


class Bounce(Rejection):
    """A bot refused the mail (Action Mailbox's ``bounce``): status ``bounced``."""

    status: ClassVar[InboundStatus] = InboundStatus.bounced


class Quarantined(Rejection):
    """Spam by the route's policy: never dispatched, kept until released or deleted."""

    status: ClassVar[InboundStatus] = InboundStatus.quarantined


class Unscanned(Rejection):
    """Not dispatched yet: spamd could not scan it. Not final: it is scanned again later."""

    status: ClassVar[InboundStatus] = InboundStatus.unscanned


class TransientError(MailbotError):
    pass


class SpamdUnavailable(TransientError):
    """spamd did not give a verdict (refused, timed out, or answered an error)."""


class Busy(MailbotError):
    """A row another transaction holds, asked for without waiting (a batch that already
    holds other rows' locks must not wait: two batches could wait for each other). The work
    on the message is undone and handed back untouched, never counted as a failure."""


class DeliveryError(MailbotError):
    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
