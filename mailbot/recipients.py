"""Which of our addresses is this? One answer, used at RCPT, by spam-at-DATA and by match.

An envelope recipient is exactly one of:

- ``foreign``: not a domain we receive for (we are never a relay);
- ``token``: a reply address, ``reply+<token>@``: live (its participant, conversation and
  bot) or dead, and why (unknown, expired, revoked); or ``<token>@<label>.<domain>``, a
  temporary address on the subdomain a bot owns (the inspector's ``inspect.``);
- ``bounce``: a return path, ``bounces+<id>@``: live if a mail we sent has it;
- ``route``: an address the deployment's routing table claims (``support@``): its bot;
- ``nothing``: one of our domains, but no token, return path or route: why.

The deployment is given as plain data (:class:`Directory`: our domains and the routing
table as a callable), so the SMTP policy that asks knows nothing of the Bot API. Routed
addresses are answered without the database; tokens and return paths are looked up, and a
database error is raised to the caller (RCPT answers it with a temporary failure).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot import addresses
from mailbot.store import live_tokens, tokens
from mailbot.store.db import OpenSession
from mailbot.store.models import OutboundMessage, utcnow

if TYPE_CHECKING:
    from mailbot.app import Mailbot
    from mailbot.store.models import Conversation, Participant

Kind = Literal["foreign", "token", "bounce", "route", "nothing"]


class Why(StrEnum):
    """Why an address takes no mail (``token_*``, ``no_route``: the codes match stores)."""

    FOREIGN_DOMAIN = "foreign_domain"
    TOKEN_UNKNOWN = "token_unknown"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_REVOKED = "token_revoked"
    DEAD_RETURN_PATH = "dead_return_path"
    NO_ROUTE = "no_route"


_TOKEN_PROBLEMS = {
    "unknown": Why.TOKEN_UNKNOWN,
    "expired": Why.TOKEN_EXPIRED,
    "revoked": Why.TOKEN_REVOKED,
}


@dataclass(frozen=True)
class Directory:
    """What the recipients lookup needs of a deployment, as plain data."""

    domains: frozenset[str]
    # An address → the name of the bot whose route claims it, or None.
    route: Callable[[str], str | None] = lambda _address: None
    # ``inspect.example.org`` → the bot whose temporary addresses live there.
    subdomains: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, app: Mailbot, domains: frozenset[str]) -> Directory:
        """The directory of a deployment: its routing table, read through a callable, and
        the subdomains its bots own (``Bot.subdomain``), which are ours too."""

        def route(address: str) -> str | None:
            bot = app.router.route(address)
            return None if bot is None else bot.name

        owned = {
            f"{bot.subdomain}.{domain}": bot.name
            for bot in app.bots.values()
            if bot.subdomain
            for domain in domains
        }
        return cls(domains | frozenset(owned), route, owned)


@dataclass(frozen=True)
class Recipient:
    """The answer for one address: what kind it is, and why it takes no mail (None: it does)."""

    address: str  # local@domain, the domain lower-cased
    kind: Kind
    why: Why | None = None
    bot: str | None = None  # a route's bot, or the bot of a token's conversation
    # A token's participant, live or not (an expired token still names who it was sent to).
    participant: Participant | None = None

    @property
    def live(self) -> bool:
        return self.why is None

    @property
    def conversation(self) -> Conversation | None:
        return None if self.participant is None else self.participant.conversation


async def lookup(
    address: str,
    directory: Directory,
    sessions: OpenSession,
    recent: live_tokens.RecentlyLive | None = None,
) -> Recipient:
    """What ``address`` is to us. Opens a session only for a token or a return path, and
    not for a token ``recent`` found live lately (RCPT; mailbot/store/live_tokens.py)."""
    local, domain = addresses.split(address)
    address = f"{local}@{domain}"
    if domain not in directory.domains:
        return Recipient(address, "foreign", Why.FOREIGN_DOMAIN)
    owner = directory.subdomains.get(domain)
    token = addresses.token_from_local_part(local) if owner is None else local
    if token is not None:
        # Hashed here only for RCPT's memory; a token that cannot be one is never in it.
        known = tokens.normalize_token(token) if recent is not None else None
        token_hash = tokens.hash_token(known) if known is not None else None
        if recent is not None and token_hash is not None and recent.live(token_hash, domain):
            return Recipient(address, "token")  # live a moment ago: who it names is not needed
        async with sessions() as session:
            found = await tokens.check(session, token)
        participant = found.participant
        why = None if found.problem is None else _TOKEN_PROBLEMS[found.problem]
        bot = None if participant is None else participant.conversation.bot
        if owner is not None and participant is not None and bot != owner:
            # Another bot's token is no temporary address: one credential, one address.
            return Recipient(address, "token", Why.TOKEN_UNKNOWN)
        if recent is not None and token_hash is not None and why is None and found.expires_at:
            left = (found.expires_at - utcnow()).total_seconds()
            recent.remember(token_hash, domain, left)
        return Recipient(address, "token", why, bot, participant)
    if addresses.bounce_id_from_local_part(local) is not None:
        async with sessions() as session:
            live = await _is_live_return_path(session, address)
        return Recipient(address, "bounce", None if live else Why.DEAD_RETURN_PATH)
    bot = directory.route(address)
    if bot is not None:
        return Recipient(address, "route", bot=bot)
    return Recipient(address, "nothing", Why.NO_ROUTE)


async def _is_live_return_path(session: AsyncSession, address: str) -> bool:
    """A VERP address of a mail we sent (accepted at RCPT: bounces arrive there)."""
    found = await session.scalar(
        select(OutboundMessage.id).where(func.lower(OutboundMessage.mail_from) == address.lower())
    )
    return found is not None
