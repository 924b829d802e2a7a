"""What a spam score does to a message: delivered, quarantined, or refused at DATA time.

Thresholds come from the settings (``MAILBOT_SPAM_QUARANTINE_SCORE``, default spamd's own
required score; ``MAILBOT_SPAM_REJECT_SCORE``, default off), and a bot may set its own, so a
help desk open to anyone can be stricter than replies from known participants::

    class Helpdesk(Bot):
        name = "helpdesk"
        spam_quarantine_score = 3.0   # quarantine from 3.0, whatever the node's default
        spam_reject_score = 10.0      # refuse at DATA time from 10.0

Where the scan happens:

- **At DATA time**, when the SMTP answer depends on it: a reject score applies to one of the
  recipients (the strictest one counts), or ``MAILBOT_SPAMD_DOWN=tempfail`` (spamd down →
  ``451``, the sender retries). A reject-level score is refused with ``550 5.7.1``, so nothing
  is accepted that would be dropped. The verdict is stored with the row, not asked twice.
- **Otherwise in the worker**, beside the MIME analysis and outside the row's transaction (a
  slow spamd never holds the database's write lock). spamd down → status ``unscanned``
  (:mod:`mailbot.spam.rescan` sends it through again once spamd answers).

In the pipeline, :func:`require_scan` stops unscanned mail before anything else, and
:func:`apply` quarantines by the matched bot's thresholds. Once accepted, a message is never
dropped for its score: above the reject score it is quarantined. A released message
(``mailbot quarantine release``) keeps its verdict and is not quarantined again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from mailbot import recipients
from mailbot.config import Settings
from mailbot.errors import Quarantined, SpamdUnavailable, Unscanned
from mailbot.spam.client import SpamChecker, Verdict
from mailbot.status import RefusalCode
from mailbot.store.db import Sessions
from mailbot.store.models import InboundMessage, utcnow

log = logging.getLogger(__name__)

Action = Literal["deliver", "quarantine", "reject"]

SCANNING_OFF = {
    "scanned": False,
    "reason": "not scanned: spam scanning is off (MAILBOT_SPAMD unset)",
}


class SpamScores(Protocol):
    """A bot's own scores (a :class:`mailbot.Bot` class has them); None: the node's."""

    @property
    def spam_quarantine_score(self) -> float | None: ...

    @property
    def spam_reject_score(self) -> float | None: ...


class Deployment(Protocol):
    """The bots by name, each with its scores: a :class:`mailbot.Mailbot` is one."""

    @property
    def bots(self) -> Mapping[str, SpamScores]: ...


@dataclass(frozen=True)
class BotScores:
    """A bot's scores as plain data: what the SMTP policy gets, not the bot class."""

    spam_quarantine_score: float | None = None
    spam_reject_score: float | None = None


@dataclass(frozen=True)
class ScoreTable:
    """Every bot's scores by name, as plain data (a :class:`Deployment`, without the Bot API)."""

    bots: Mapping[str, BotScores]

    @classmethod
    def of(cls, app: Deployment) -> ScoreTable:
        return cls(
            {
                name: BotScores(bot.spam_quarantine_score, bot.spam_reject_score)
                for name, bot in app.bots.items()
            }
        )


@dataclass(frozen=True)
class Thresholds:
    quarantine: float | None  # None: spamd's own required score
    reject: float | None  # None: never refused for its score

    def decide(self, verdict: Verdict) -> Action:
        if self.reject is not None and verdict.score >= self.reject:
            return "reject"
        if verdict.score >= self.quarantine_limit(verdict):
            return "quarantine"
        return "deliver"

    def quarantine_limit(self, verdict: Verdict) -> float:
        return verdict.threshold if self.quarantine is None else self.quarantine


def thresholds_for(settings: Settings, bot: SpamScores | None) -> Thresholds:
    """The node's thresholds, each replaced by the bot's own where it sets one."""
    quarantine = getattr(bot, "spam_quarantine_score", None)
    reject = getattr(bot, "spam_reject_score", None)
    return Thresholds(
        settings.spam_quarantine_score if quarantine is None else quarantine,
        settings.spam_reject_score if reject is None else reject,
    )


def scans_at_data(settings: Settings, app: Deployment) -> bool:
    """Does the SMTP answer depend on the verdict, so the scan must happen before it?"""
    return (
        settings.spamd_down == "tempfail"
        or settings.spam_reject_score is not None
        or any(bot.spam_reject_score is not None for bot in app.bots.values())
    )


@dataclass(frozen=True)
class AtData:
    """The DATA-time outcome: accept (storing ``spam``), or refuse and why."""

    action: Literal["accept", "reject", "tempfail"]
    spam: dict[str, Any] | None = None
    score: float = 0.0
    limit: float = 0.0
    error: str = ""


async def screen_at_data(
    checker: SpamChecker,
    settings: Settings,
    sessions: Sessions,
    app: Deployment,
    directory: recipients.Directory,
    raw: bytes,
    rcpt_tos: list[str],
) -> AtData:
    limit = await _reject_score(settings, sessions, app, directory, rcpt_tos)
    try:
        verdict = await checker.check(raw)
    except SpamdUnavailable as exc:
        if settings.spamd_down == "tempfail":
            return AtData("tempfail", error=str(exc))
        log.warning("%s; accepting the message, it will be scanned later", exc)
        return AtData("accept", unavailable(exc))
    if limit is not None and verdict.score >= limit:
        return AtData("reject", score=verdict.score, limit=limit)
    return AtData("accept", verdict.to_json())


async def _reject_score(
    settings: Settings,
    sessions: Sessions,
    app: Deployment,
    directory: recipients.Directory,
    rcpt_tos: list[str],
) -> float | None:
    """The strictest reject score among the recipients' bots (None: none applies)."""
    if settings.spam_reject_score is None and not any(
        bot.spam_reject_score is not None for bot in app.bots.values()
    ):
        return None
    scores: list[float] = []
    for rcpt in rcpt_tos:
        # A token counts even when dead: its conversation's bot still owns the address.
        found = await recipients.lookup(rcpt, directory, sessions)
        bot = None if found.bot is None else app.bots.get(found.bot)
        reject = thresholds_for(settings, bot).reject
        if reject is not None:
            scores.append(reject)
    return min(scores, default=None)


def unavailable(exc: Exception) -> dict[str, Any]:
    return {"scanned": False, "reason": f"not scanned yet: {exc}", "tried_at": utcnow().isoformat()}


def has_verdict(spam: dict[str, Any] | None) -> bool:
    return bool(spam and spam.get("scanned"))


async def scan_row(
    sessions: Sessions,
    checker: SpamChecker | None,
    inbound_id: int,
    raw: Callable[[], Awaitable[bytes]],
) -> None:
    """The worker's scan: store the verdict, or why there is none, unless it has one.
    ``raw`` reads the message, only when it is to be scanned."""
    if checker is None:
        return
    async with sessions() as session:
        stored = await session.get(InboundMessage, inbound_id)
        if stored is None or has_verdict(stored.spam):
            return
    try:
        result = (await checker.check(await raw())).to_json()
    except SpamdUnavailable as exc:
        log.warning("inbound %s: %s; it waits as unscanned", inbound_id, exc)
        result = unavailable(exc)
    async with sessions() as session, session.begin():
        row = await session.get(InboundMessage, inbound_id)
        if row is not None:
            row.spam = {**(row.spam or {}), **result}


def require_scan(spam: dict[str, Any] | None, scanning: bool) -> dict[str, Any] | None:
    """Pipeline stage: unscanned mail goes no further while scanning is on. Returns the
    row's spam column as it is to be stored."""
    if has_verdict(spam):
        return spam
    if not scanning:
        return dict(SCANNING_OFF)
    reason = (spam or {}).get("reason", "not scanned yet")
    raise Unscanned(f"{reason}; scanned again when spamd answers", code=RefusalCode.unscanned)


def apply(
    spam: dict[str, Any] | None, settings: Settings, bot: SpamScores | None
) -> dict[str, Any] | None:
    """Pipeline stage, once the bot is known: the spam column with the action its
    thresholds give (stored whatever comes next); :func:`hold` then acts on it."""
    if not has_verdict(spam) or spam is None:
        return spam
    verdict = Verdict.from_json(spam)
    limits = thresholds_for(settings, bot)
    return {
        **spam,
        "action": "released" if spam.get("released_at") else limits.decide(verdict),
        "quarantine_score": limits.quarantine_limit(verdict),
        "reject_score": limits.reject,
    }


def hold(spam: dict[str, Any] | None) -> None:
    """Raise :class:`Quarantined` for mail :func:`apply` did not let through."""
    if not has_verdict(spam) or spam is None or spam.get("action") in ("deliver", "released"):
        return
    verdict = Verdict.from_json(spam)
    top = ", ".join(r.name for r in sorted(verdict.rules, key=lambda r: -r.score)[:5])
    raise Quarantined(
        f"spam: score {verdict.score:.1f} >= {spam['quarantine_score']:.1f} ({top})",
        code=RefusalCode.spam,
    )
