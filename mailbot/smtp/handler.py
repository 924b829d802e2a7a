"""The SMTP server's policy: what it accepts, refuses, and when it says 250.

An aiosmtpd handler; each hook is named after the verb it answers and returns the reply line.
Connection limits, TLS and AUTH belong to the listener (:mod:`mailbot.smtp.listener`).

- ``HELO``/``EHLO``, ``MAIL`` and ``RCPT`` refuse, at that command, an argument that could
  not be stored or matched: bytes that are not UTF-8 (aiosmtpd hands them on as
  surrogates), control characters, values over RFC 5321's lengths, a non-ASCII address
  without ``SMTPUTF8``. Nothing 8-bit is accepted only to fail when it is stored.
- ``MAIL`` is answered ``451 4.7.1`` over a per-IP or per-sender rate limit
  (:mod:`mailbot.smtp.ratelimit`); authenticated or not, no sender opens relaying.
- ``RCPT`` refuses what nobody wants, so nothing is accepted that would later be dropped
  (no backscatter): foreign domains (we are never a relay), dead reply addresses, addresses
  no route claims. An IP that keeps trying unknown addresses waits longer for each refusal.
- ``DATA`` refuses a header section over the message limits (``552 5.3.4``, from a linear
  scan: :func:`mailbot.screen.screen_headers`), asks spamd only when the answer depends on
  it (a reject score, or tempfail mode), then stores: the raw bytes and the envelope are
  committed before ``250``; if the commit fails the answer is ``451`` and the sender
  retries. Everything else happens later, in the worker, off this event loop.
- Any unexpected error is answered ``451`` (aiosmtpd's default would be a permanent ``500``
  that also leaks the exception text).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session

from mailbot import addresses
from mailbot.config import Settings
from mailbot.recipients import Directory, Why, lookup
from mailbot.screen import Limits as MessageLimits
from mailbot.screen import screen_headers
from mailbot.smtp.data import read_data
from mailbot.smtp.replies import (
    BAD_ADDRESS,
    BAD_HELO,
    BAD_RECIPIENT,
    BAD_SENDER,
    EXPIRED_TOKEN,
    INTERNAL_ERROR,
    LOOKUP_FAILED,
    NEEDS_SMTPUTF8,
    NO_RELAY,
    NO_SUCH_USER,
    OK_RECIPIENT,
    OK_SENDER,
    OVER_LIMIT,
    QUEUED,
    REVOKED_TOKEN,
    SPAM_CHECK_UNAVAILABLE,
    SPAM_REFUSED,
    STORE_FAILED,
    TOO_MANY_RECIPIENTS,
    UNKNOWN_TOKEN,
    Reply,
)
from mailbot.spam import policy as spam_policy
from mailbot.spam.client import SpamChecker
from mailbot.store import live_tokens, spool
from mailbot.store.db import Sessions
from mailbot.store.group_commit import GroupCommit

if TYPE_CHECKING:  # the policy needs only the type; the listener hands the limits in
    from mailbot.smtp.ratelimit import Limits

log = logging.getLogger(__name__)

MAX_RECIPIENTS = 100
# RFC 5321 4.5.3.1: a domain is at most 255 octets, a path 256 with its angle brackets, a
# local part 64.
MAX_DOMAIN_OCTETS = 255
MAX_ADDRESS_OCTETS = 254
MAX_LOCAL_PART_OCTETS = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class MailbotSMTP(SMTP):
    """aiosmtpd's server with a longer line limit for message data.

    RFC 5321 caps lines at 1000 octets, and aiosmtpd answers a longer one with a permanent
    ``500``, which would lose a person's reply: real clients do send longer lines (HTML on one
    line, unwrapped text). Postfix and Exim accept them too. Commands keep their own limit
    (``command_size_limit``), and the message size limit applies as before.
    """

    line_length_limit = 64 * 1024

    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd's DATA, but read into one buffer (mailbot/smtp/data.py): a big message
        # costs about twice its size here, not four times.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None and not self._decode_data
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            data = await read_data(self._reader, self.data_size_limit, self.line_length_limit)
        except asyncio.CancelledError:
            self._writer.close()  # the connection went away mid-message
            raise
        if data.refusal is not None:
            await self.push(data.refusal)
            self._data_done()
            return
        self.envelope.content = self.envelope.original_content = data.content
        del data
        status = await self._call_handler_hook("DATA")
        self._data_done()
        await self.push("250 OK" if status is MISSING else status)

    def _data_done(self) -> None:
        # aiosmtpd's reset after DATA; its one untyped method we call.
        self._set_post_data_state()  # type: ignore[no-untyped-call]

    async def push(self, status: str | bytes) -> None:
        # A reply may echo the client's words (VRFY, an address): bytes that were not UTF-8
        # and control characters must neither raise here nor reach the client raw.
        if isinstance(status, str):
            status = _CONTROL.sub("?", status).encode("utf-8", "replace")
        await super().push(status)


_TOKEN_REFUSALS = {
    Why.TOKEN_UNKNOWN: UNKNOWN_TOKEN,
    Why.TOKEN_EXPIRED: EXPIRED_TOKEN,
    Why.TOKEN_REVOKED: REVOKED_TOKEN,
}
_NO_BOTS = spam_policy.ScoreTable({})


class ReceiveHandler:
    """The policy for one node. The deployment comes as plain data, not as its Bot API:
    ``directory`` (our domains, the routing table) and ``bots`` (each bot's spam scores)."""

    def __init__(
        self,
        settings: Settings,
        sessions: Sessions,
        directory: Directory,
        on_stored: Callable[[int], None] = lambda _id: None,
        limits: Limits | None = None,
        spam: SpamChecker | None = None,
        bots: spam_policy.Deployment = _NO_BOTS,
        commits: GroupCommit | None = None,
        lookups: Sessions | None = None,
    ) -> None:
        self.settings = settings
        self.lookups = lookups or sessions  # read-only: RCPT and spam-at-DATA lookups
        self.recent = live_tokens.RecentlyLive(settings.rcpt_cache_seconds)
        self.commits = commits  # None: each message in a transaction of its own
        self.sessions = sessions
        self.directory = directory
        self.bots = bots
        self.on_stored = on_stored
        self.limits = limits  # None: no rate limits (replay, tools)
        self.spam = spam  # None: spam scanning is off
        self.message_limits = MessageLimits.from_settings(settings)

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        problem = _text_problem(hostname, MAX_DOMAIN_OCTETS)
        if problem is not None:
            session.host_name = None  # stored with the mail: nothing unstorable, nothing stale
            return BAD_HELO.format(verb="HELO", problem=problem)
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        problem = _text_problem(hostname, MAX_DOMAIN_OCTETS)
        if problem is not None:
            session.host_name = None
            return [BAD_HELO.format(verb="EHLO", problem=problem)]
        session.host_name = hostname
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        # The null sender stays "<>" here (aiosmtpd's RCPT wants a truthy mail_from).
        if address not in ("", "<>"):
            # No local-part limit on the sender: SRS and VERP return paths run past 64.
            refusal = _address_refusal(
                address, BAD_SENDER, smtputf8=envelope.smtp_utf8, local_limit=False
            )
            if refusal is not None:
                return refusal
        if self.limits is not None:
            limited = self.limits.message(
                _peer_ip(session), address, authenticated=bool(session.authenticated)
            )
            if limited is not None:
                return limited
        # aiosmtpd leaves recording the sender to the handler; the null sender is stored as "".
        envelope.mail_from = address or "<>"
        envelope.mail_options.extend(options)
        return str(OK_SENDER)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refusal = _address_refusal(address, BAD_RECIPIENT, smtputf8=envelope.smtp_utf8)
        if refusal is not None:
            return refusal
        local, domain = addresses.split(address)
        if not local or not domain:
            return str(BAD_ADDRESS)
        if domain not in self.directory.domains:
            return NO_RELAY.format(domain=domain)
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return str(TOO_MANY_RECIPIENTS)
        refusal = await self.refusal_for(local, domain)
        if refusal is not None:
            if refusal != str(LOOKUP_FAILED) and self.limits is not None:
                wait = self.limits.recipient_refused(
                    _peer_ip(session), authenticated=bool(session.authenticated)
                )
                if wait > 0:
                    log.debug("unknown recipients from %s: waiting %.1f s", _peer_ip(session), wait)
                    await asyncio.sleep(wait)
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return str(OK_RECIPIENT)

    def sender_refusal(self, address: str) -> str | None:
        """MAIL's refusal of a sender that came some other way (mailbot/ingress/), or None."""
        if address in ("", "<>"):
            return None
        return _address_refusal(address, BAD_SENDER, smtputf8=True, local_limit=False)

    async def recipient_refusal(self, address: str) -> str | None:
        """RCPT's refusal for an address that came some other way (the webhook ingresses,
        mailbot/ingress/), or None to take it: the same checks, without the slowdown (the
        caller proved who it is) and with SMTPUTF8 as given (the provider took it)."""
        refusal = _address_refusal(address, BAD_RECIPIENT, smtputf8=True)
        if refusal is not None:
            return refusal
        local, domain = addresses.split(address)
        if not local or not domain:
            return str(BAD_ADDRESS)
        if domain not in self.directory.domains:
            return NO_RELAY.format(domain=domain)
        return await self.refusal_for(local, domain)

    async def refusal_for(self, local: str, domain: str) -> str | None:
        """The refusal for a recipient, or None to accept it (:mod:`mailbot.recipients`).

        Routed addresses are known without the database. Reply tokens and VERP return paths
        (bounces come back only to the return path of a mail we sent) are looked up; if the
        database cannot answer, the sender is told to retry rather than to give up.
        """
        address = f"{local}@{domain}"
        try:
            found = await lookup(address, self.directory, self.lookups, self.recent)
        except Exception:  # noqa: BLE001 - database down: the sender must retry, not give up
            log.exception("recipient lookup failed for %s", address)
            return str(LOOKUP_FAILED)
        if found.why is None:
            return None
        if found.why in _TOKEN_REFUSALS:
            return str(_TOKEN_REFUSALS[found.why])
        if found.why is Why.FOREIGN_DOMAIN:
            return NO_RELAY.format(domain=addresses.domain_of(found.address))
        return NO_SUCH_USER.format(address=found.address)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        peer = session.peer[0] if isinstance(session.peer, tuple) else None
        record = spool.Envelope(
            mail_from="" if envelope.mail_from in (None, "<>") else envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            client_ip=peer,
            helo=session.host_name,
            tls=session.ssl is not None,
            auth_user=_auth_user(session),
        )
        return await self.accept(raw, record)

    async def accept(self, raw: bytes, record: spool.Envelope) -> str:
        """DATA's answer for one message: screened, scanned when the answer depends on it,
        and committed before 250. The webhook ingresses (mailbot/ingress/) store through it."""
        peer = record.client_ip
        # Bounded work per message: a header section over a limit is refused before anything
        # parses it (a linear scan of at most max_header_bytes, cheap on this loop).
        over = screen_headers(raw, self.message_limits)
        if over is not None:
            log.info("refused a message from %s: %s", peer, over.reason)
            return OVER_LIMIT.format(reason=over.reason)
        screened = await self.screen_spam(raw, record.rcpt_tos)
        if isinstance(screened, str):
            return screened
        try:
            if self.commits is not None:
                inbound_id = await self.commits.store(raw, record, screened)
            else:
                inbound_id = await spool.store(self.sessions, raw, record, spam=screened)
        except Exception:  # noqa: BLE001 - not stored means not accepted: the sender retries
            log.exception("could not store a message from %s", peer)
            return str(STORE_FAILED)
        self.on_stored(inbound_id)
        return QUEUED.format(id=inbound_id)

    async def screen_spam(self, raw: bytes, rcpt_tos: list[str]) -> str | dict[str, Any] | None:
        """Scan now when the answer depends on it: a refusal line, or the verdict to store."""
        if self.spam is None or not spam_policy.scans_at_data(self.settings, self.bots):
            return None
        found = await spam_policy.screen_at_data(
            self.spam, self.settings, self.lookups, self.bots, self.directory, raw, rcpt_tos
        )
        if found.action == "reject":
            log.info("refused spam for %s: score %.1f", rcpt_tos, found.score)
            return SPAM_REFUSED.format(score=found.score, limit=found.limit)
        if found.action == "tempfail":
            log.warning("%s; answering 451", found.error)
            return str(SPAM_CHECK_UNAVAILABLE)
        return found.spam

    async def handle_exception(self, error: Exception) -> str:
        log.exception("SMTP session error", exc_info=error)
        return str(INTERNAL_ERROR)


def _text_problem(value: str, max_octets: int) -> str | None:
    """Why a command's argument cannot be taken, in a few words; None when it can.

    aiosmtpd decodes arguments as UTF-8 with ``surrogateescape``: a byte that was not UTF-8
    is a lone surrogate here, which no database, log file or reply line can hold.
    """
    try:
        octets = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if _CONTROL.search(value):
        return "control character"
    if octets > max_octets:
        return f"longer than {max_octets} octets"
    return None


def _address_refusal(
    address: str, refusal: Reply, *, smtputf8: bool, local_limit: bool = True
) -> str | None:
    """The 553 for an address that cannot be taken as it is, or None."""
    problem = _text_problem(address, MAX_ADDRESS_OCTETS)
    if problem is None:
        local = addresses.split(address)[0]
        if local_limit and len(local.encode("utf-8")) > MAX_LOCAL_PART_OCTETS:
            problem = f"local part longer than {MAX_LOCAL_PART_OCTETS} octets"
        elif not smtputf8 and not address.isascii():
            return str(NEEDS_SMTPUTF8)
    return None if problem is None else refusal.format(problem=problem)


def _auth_user(session: Session) -> str | None:
    # auth_data is what the authenticator returned: the submitter's name (mailbot.smtp.listener).
    data: Any = session.auth_data if session.authenticated else None
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data) if data else None


def _peer_ip(session: Session) -> str | None:
    peer: Any = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else None
