"""The status vocabulary, in one place: what a stored message can be, and why it was refused.

Inbound lifecycle (changed only by :mod:`mailbot.store.spool`; :func:`check_transition` guards it)::

    pending -> processing -> delivered | rejected | bounced | quarantined | failed   (final)
       ^           |      \\-> unscanned   spamd was down; not final
       |           |              |
       |           \\-> pending    transient failure (backoff), or recovery after a restart
       \\------------------------- rescan (unscanned), release (quarantined),
                                  reprocess (any final)

A status may always stay what it is (a lease taken back, a retry recorded twice).
``pending`` and ``processing`` are in flight (:data:`IN_FLIGHT_INBOUND`); the five final
statuses (:data:`FINAL_INBOUND`) are never acted on again unless someone requeues the row;
``unscanned`` is neither: it waits for spamd.

Outbound lifecycle (first set by :mod:`mailbot.outbound.outbox`, then changed only by
:mod:`mailbot.outbound.delivery` and :mod:`mailbot.outbound.record`)::

    held (nowhere to send) | queued -> sending -> sent | deferred | failed | suppressed
                                          ^            |
                                          \\-----------/   deferred: 4xx or no answer, tried
                                                           again with backoff until the
                                                           delivery lifetime runs out (failed)

``suppressed``: never sent, on purpose (the participant unsubscribed, is suspended after a hard
bounce, or was sent too much this hour). ``failed``: a 5xx (recorded as a hard bounce of that
participant), the lifetime ran out, it could not be composed safely, or an operator cancelled
it. A ``sending`` row whose lease ran out (its sender died) is taken again; an operator's retry
puts a ``deferred`` or ``failed`` row back to ``queued``.

:class:`RefusalCode` lists every machine-readable word a refusal carries (stored in the
row's outcome, and the key of the notice that explains it, mailbot/outbound/notices.py).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class InboundStatus(enum.StrEnum):
    pending = "pending"
    processing = "processing"
    delivered = "delivered"
    rejected = "rejected"
    bounced = "bounced"
    quarantined = "quarantined"
    unscanned = "unscanned"
    failed = "failed"


class OutboundStatus(enum.StrEnum):
    held = "held"
    queued = "queued"
    sending = "sending"
    deferred = "deferred"
    sent = "sent"
    failed = "failed"
    suppressed = "suppressed"


class WebhookStatus(enum.StrEnum):
    """A webhook event for one URL: ``queued`` until the app answers 2xx (``delivered``) or
    the tries run out (``failed``); only mailbot/outbound/webhooks.py changes it."""

    queued = "queued"
    delivered = "delivered"
    failed = "failed"


FINAL_INBOUND = frozenset(
    {
        InboundStatus.delivered,
        InboundStatus.rejected,
        InboundStatus.bounced,
        InboundStatus.quarantined,
        InboundStatus.failed,
    }
)

IN_FLIGHT_INBOUND = frozenset({InboundStatus.pending, InboundStatus.processing})

# Where each status may go (besides staying what it is): the lifecycle drawn above, as data.
TRANSITIONS: Mapping[InboundStatus, frozenset[InboundStatus]] = {
    InboundStatus.pending: frozenset({InboundStatus.processing}),
    InboundStatus.processing: FINAL_INBOUND | {InboundStatus.unscanned, InboundStatus.pending},
    InboundStatus.unscanned: frozenset({InboundStatus.pending, InboundStatus.processing}),
    **{final: frozenset({InboundStatus.pending}) for final in FINAL_INBOUND},
}


class TransitionError(RuntimeError):
    """A status change the lifecycle does not allow: a bug in mailbot, never bad input."""


def may_change(old: InboundStatus, new: InboundStatus) -> bool:
    return old == new or new in TRANSITIONS[old]


def check_transition(old: InboundStatus, new: InboundStatus) -> None:
    """Raise :class:`TransitionError` unless a row may go from ``old`` to ``new``."""
    if not may_change(old, new):
        raise TransitionError(f"an inbound message cannot go from {old} to {new}")


class RefusalCode(enum.StrEnum):
    """Why a message was refused: the ``code`` of a :class:`~mailbot.errors.Rejection`."""

    rejected = "rejected"  # the default of a Rejection without a more precise word
    # classify: automatic mail is never acted on (a person's mail is not refused there)
    bounce = "bounce"
    auto_reply = "auto_reply"
    loop = "loop"
    list = "list"
    # spam_policy
    spam = "spam"
    unscanned = "unscanned"
    # match: the reply address (mailbot.recipients.Why) or the route
    token_unknown = "token_unknown"
    token_expired = "token_expired"
    token_revoked = "token_revoked"
    no_route = "no_route"
    # authorize
    from_not_single = "from_not_single"
    no_sender = "no_sender"
    not_owner = "not_owner"
    dmarc_fail = "dmarc_fail"
    unauthenticated = "unauthenticated"
    # pipeline
    duplicate = "duplicate"
    paused = "paused"  # a conversation answering itself (bots in a ping-pong): loops.py
    empty_reply = "empty_reply"
    # a bot's self.bounce(reason)
    bounced_by_bot = "bounced_by_bot"
    # analyse: over a resource cap, or a structure limit of mailbot.screen
    too_costly = "too_costly"
    too_large = "too_large"
    header_too_large = "header_too_large"
    too_many_headers = "too_many_headers"
    structured_header_too_large = "structured_header_too_large"
    too_many_addresses = "too_many_addresses"
    too_many_encoded_words = "too_many_encoded_words"
    too_many_parts = "too_many_parts"
    mime_too_deep = "mime_too_deep"
