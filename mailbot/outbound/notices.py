"""Telling a person, in plain words, why their reply did not post (as Discourse does).

A refused message is stored ``rejected`` with its reason whatever happens here; this module
decides whether its sender is also told. A notice is a mail, and a mail to the wrong address
is backscatter (it gets servers blocklisted) or the first turn of a mail loop, so it goes out
only when all of these hold:

- the refusal is one a person can act on (:data:`WORDS`: not the owner, empty reply, dead
  reply address, spam, a bot's own reason);
- the mail was written by a person: not the null sender, not a bounce or an auto-reply
  (:mod:`mailbot.pipeline.classify`), not from one of our own domains;
- the From address provably sent it: SPF or DKIM passed and aligned with the From domain;
- the sender got no notice in the last ``notice_interval_seconds`` (an hour by default).

The notice itself is ``Auto-Submitted: auto-replied`` (RFC 3834), so another mailbot, or
any well-behaved responder, never answers it; it is composed and stored by the outbox
(:func:`mailbot.outbound.outbox.queue_notice`) like every mail: this module only decides and words.
Whether and why a notice was (not) sent is kept in the row's ``outcome.notice``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot import addresses, headers
from mailbot.config import Settings
from mailbot.errors import Rejection
from mailbot.outbound import outbox as outbound
from mailbot.parse import ParsedMail
from mailbot.status import RefusalCode
from mailbot.store.models import InboundMessage, OutboundMessage, utcnow
from mailbot.trust.authenticate import Authentication

KIND = "notice"

WORDS: dict[RefusalCode, str] = {
    RefusalCode.not_owner: (
        "The reply address you wrote to was sent to someone else, so it only accepts mail "
        "from their address. If you forwarded a notification, ask to be added to the "
        "conversation instead, or reply to a notification that was sent to you."
    ),
    RefusalCode.empty_reply: (
        "We found no new text in your reply once the quoted message and your signature were "
        "removed. Write your answer above the quoted text and send it again."
    ),
    RefusalCode.token_expired: (
        "The reply address you wrote to has expired. Reply to a newer notification instead."
    ),
    RefusalCode.token_revoked: (
        "The reply address you wrote to was revoked and no longer accepts mail."
    ),
    RefusalCode.token_unknown: (
        "The reply address you wrote to is unknown. Check that the whole address was copied."
    ),
    RefusalCode.no_route: "The address you wrote to does not accept mail.",
    RefusalCode.too_large: "Your message was too large. Send it again without large attachments.",
    RefusalCode.spam: (
        "Our spam filter held your message. It will be posted if a moderator releases it."
    ),
    RefusalCode.unauthenticated: (
        "This conversation only accepts mail that your mail provider signed (DKIM) or that "
        "passes DMARC, and yours did not. Send it from your provider's own servers."
    ),
    RefusalCode.bounced_by_bot: "It was refused: {reason}.",
}

_PREFIX = re.compile(r"^\s*(?:(?:re|aw|fwd?)\s*:|\[rejected\])\s*", re.IGNORECASE)


def clean_subject(subject: str) -> str:
    """The subject without ``Re:`` or ``[Rejected]`` in front (no "[Rejected] [Rejected]")."""
    previous = None
    while previous != subject:
        previous, subject = subject, _PREFIX.sub("", subject)
    return subject.strip()


async def consider(
    session: AsyncSession,
    settings: Settings,
    row: InboundMessage,
    parsed: ParsedMail,
    refusal: Rejection,
) -> dict[str, Any]:
    """Queue a notice if one is due; returns what was decided (kept in ``outcome.notice``)."""
    why_not = await _why_not(session, settings, row, parsed, refusal)
    if why_not is not None:
        return {"sent": False, "why": why_not}
    assert parsed.sender is not None
    try:
        notice = await _queue(session, settings, row, parsed, refusal, parsed.sender)
    except (headers.InvalidAddress, headers.UnsafeMessage) as exc:
        # Never a reason to lose the refusal itself: the notice is simply not sent.
        return {"sent": False, "why": f"the notice could not be composed safely: {exc}"}
    return {
        "sent": notice.status.value != "failed",
        "outbound_id": notice.id,
        "to": notice.recipient,
    }


async def _why_not(
    session: AsyncSession,
    settings: Settings,
    row: InboundMessage,
    parsed: ParsedMail,
    refusal: Rejection,
) -> str | None:
    kind = (row.outcome or {}).get("classification", "person")
    if kind != "person":
        return f"never to automatic mail ({kind})"
    if refusal.code not in WORDS:
        return f"no notice for a refusal of kind {refusal.code}"
    sender = parsed.sender
    if not row.mail_from or not sender:
        return "never to the null sender or a mail without From"
    if addresses.domain_of(sender) in settings.domains:
        return "never to our own addresses"
    auth = Authentication.from_json(row.authentication) if row.authentication else None
    if auth is None or not auth.sender_verified:
        return "the From address passed neither SPF nor aligned DKIM: a notice could be backscatter"
    since = utcnow() - timedelta(seconds=settings.notice_interval_seconds)
    recent = await session.scalar(
        select(OutboundMessage.id).where(
            OutboundMessage.kind == KIND,
            OutboundMessage.recipient == sender.lower(),
            OutboundMessage.created_at >= since,
        )
    )
    if recent is not None:
        return f"{sender} was already sent a notice within {settings.notice_interval_seconds} s"
    try:
        headers.addr_spec(sender)
    except headers.InvalidAddress:
        return "the From address is not one plain address that a notice could go to"
    return None


async def _queue(
    session: AsyncSession,
    settings: Settings,
    row: InboundMessage,
    parsed: ParsedMail,
    refusal: Rejection,
    sender: str,
) -> OutboundMessage:
    # The inbound subject is the sender's text: decoded, cleaned and cut by mailbot.headers.
    their_subject = headers.subject(parsed.subject or "")
    subject = headers.subject(f"[Rejected] {clean_subject(their_subject) or 'your message'}")
    explanation = WORDS[refusal.code].format(reason=refusal.reason.rstrip("."))
    return await outbound.queue_notice(
        session,
        settings,
        kind=KIND,
        to=sender,
        subject=subject,
        body=(
            f'Your message "{their_subject or "(no subject)"}" was not posted.\n\n'
            f"{explanation}\n\n"
            "-- \nThis is an automatic message; replies to it are not read.\n"
        ),
        in_reply_to=parsed.message_id,
        inbound_id=row.id,
    )
