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

Under every policy but ``open`` the From must be exactly one mailbox (one header, one
address, no group): otherwise ``from_not_single``, whatever DMARC said.
"""

from __future__ import annotations

from mailbot.bot import SenderPolicy
from mailbot.config import Settings
from mailbot.errors import Rejection
from mailbot.parse import ParsedMail
from mailbot.pipeline.match import Match
from mailbot.status import RefusalCode
from mailbot.trust.authenticate import Authentication

ENFORCING = frozenset({"quarantine", "reject"})


# What the parser records about a From that is not exactly one mailbox (mailbot/parse.py).
FROM_DEFECTS = {
    "MultipleFromHeaders": "it has more than one From header",
    "FromGroupSyntax": "its From is a group, not a mailbox",
    "FromUnparseable": "its From header could not be read",
}


def from_problem(mail: ParsedMail) -> str | None:
    """Why the From is not exactly one mailbox, or None. A second address is how a forger
    rides on someone else's DMARC-protected domain (RFC 7489 §6.6.1), so such mail cannot
    act under any policy but ``open``."""
    for defect, words in FROM_DEFECTS.items():
        if defect in mail.defects:
            return words
    from_headers = sum(1 for name, _ in mail.headers if name.lower() == "from")
    if from_headers > 1:
        return FROM_DEFECTS["MultipleFromHeaders"]
    if len(mail.from_) > 1:
        return f"its From names {len(mail.from_)} addresses"
    if mail.from_ and "@" not in mail.from_[0].address:
        return FROM_DEFECTS["FromUnparseable"]
    return None


def authorize(
    found: Match,
    mail: ParsedMail,
    auth: Authentication | None = None,
    policy: SenderPolicy = "standard",
    settings: Settings | None = None,
) -> None:
    if policy == "open":
        return
    problem = from_problem(mail)
    if problem is not None:
        raise Rejection(
            f"the From must be exactly one address, and {problem}", code=RefusalCode.from_not_single
        )
    if auth is not None:
        _check_authentication(auth, policy)
    if found.participant is None:
        return  # a route without a conversation: the bot decides whom it serves
    sender = mail.sender
    if sender is None:
        raise Rejection("the message has no readable From address", code=RefusalCode.no_sender)
    owner = found.participant.email.lower()
    aliases = (settings.sender_aliases if settings else {}).get(owner, [])
    if sender.lower() not in {owner, *(a.lower() for a in aliases)}:
        raise Rejection(
            f"{sender} is not the participant this reply address was sent to",
            code=RefusalCode.not_owner,
        )


def _check_authentication(auth: Authentication, policy: SenderPolicy) -> None:
    domain = auth.from_domain or ", ".join(auth.from_domains) or "the From domain"
    if auth.dmarc == "fail" and auth.dmarc_policy in ENFORCING:
        raise Rejection(
            f"DMARC failed for {domain} (p={auth.dmarc_policy}): the From address is forged "
            "or the mail was changed on the way",
            code=RefusalCode.dmarc_fail,
        )
    if policy == "strict" and not (auth.dmarc == "pass" or auth.aligned_dkim_pass):
        raise Rejection(
            f"unauthenticated sender: this address requires DMARC pass or a DKIM signature "
            f"by {domain} (dmarc={auth.dmarc})",
            code=RefusalCode.unauthenticated,
        )
