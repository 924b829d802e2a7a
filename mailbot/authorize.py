"""May this sender act through this address?

A reply address is a credential: it was sent to one participant, so only mail from that
participant's address may post through it. A forwarded notification answered by someone
else, or a From that was typed by a forger, is refused here, with the reason stored.
"""

from __future__ import annotations

from mailbot.errors import Rejection
from mailbot.match import Match
from mailbot.parse import ParsedMail


def authorize(found: Match, mail: ParsedMail) -> None:
    if found.participant is None:
        return  # a route without a conversation: the bot decides whom it serves
    sender = mail.sender
    if sender is None:
        raise Rejection("the message has no readable From address", code="no_sender")
    if sender != found.participant.email.lower():
        raise Rejection(
            f"{sender} is not the participant this reply address was sent to",
            code="not_owner",
        )
