"""May this sender act through this address?

A reply address is a credential: it was sent to one participant, so only mail from that
participant's address may post through it. A forwarded notification answered by someone
else, or a From that was typed by a forger, is refused here, with the reason stored.

Each bot chooses how much proof it wants with its ``sender_policy`` class attribute:

- ``"standard"`` (default): the From address is the participant's (case-insensitive, or one
  of their ``sender_aliases``), and DMARC did not fail for a domain that asks receivers to act
  on failure (``p=quarantine`` or ``p=reject``). A domain without DMARC, or with ``p=none``,
  is taken at its word: the token is the credential.
- ``"strict"``: as standard, and the From domain must be proven: DMARC ``pass``, or a valid
  DKIM signature aligned with the From domain.
- ``"open"``: anyone may write (a help desk); nothing is checked here.
"""

from __future__ import annotations

from mailbot.authenticate import Authentication
from mailbot.bot import SenderPolicy
from mailbot.config import Settings
from mailbot.errors import Rejection
from mailbot.match import Match
from mailbot.parse import ParsedMail

ENFORCING = frozenset({"quarantine", "reject"})


def authorize(
    found: Match,
    mail: ParsedMail,
    auth: Authentication | None = None,
    policy: SenderPolicy = "standard",
    settings: Settings | None = None,
) -> None:
    if policy == "open":
        return
    if auth is not None:
        _check_authentication(auth, policy)
    if found.participant is None:
        return  # a route without a conversation: the bot decides whom it serves
    sender = mail.sender
    if sender is None:
        raise Rejection("the message has no readable From address", code="no_sender")
    owner = found.participant.email.lower()
    aliases = (settings.sender_aliases if settings else {}).get(owner, [])
    if sender.lower() not in {owner, *(a.lower() for a in aliases)}:
        raise Rejection(
            f"{sender} is not the participant this reply address was sent to",
            code="not_owner",
        )


def _check_authentication(auth: Authentication, policy: SenderPolicy) -> None:
    domain = auth.from_domain or "the From domain"
    if auth.dmarc == "fail" and auth.dmarc_policy in ENFORCING:
        raise Rejection(
            f"DMARC failed for {domain} (p={auth.dmarc_policy}): the From address is forged "
            "or the mail was changed on the way",
            code="dmarc_fail",
        )
    if policy == "strict" and not (auth.dmarc == "pass" or auth.aligned_dkim_pass):
        raise Rejection(
            f"unauthenticated sender: this address requires DMARC pass or a DKIM signature "
            f"by {domain} (dmarc={auth.dmarc})",
            code="unauthenticated",
        )
