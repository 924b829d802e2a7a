"""The SMTP listeners: the plain port with STARTTLS, and the implicit-TLS port (465).

:class:`GuardedSMTP` is the protocol each connection runs, aiosmtpd's server plus what a
public listener needs and aiosmtpd does not have:

- **connection limits** (aiosmtpd has none, #282): a connection over a limit of
  :class:`~mailbot.smtp.ratelimit.Limits` is greeted with ``421`` and closed;
- **idle timeouts that shrink under stress**: a session idle for ``smtp_idle_timeout`` gets
  ``421`` and is closed; once open connections reach ``smtp_stress_at`` of
  ``max_connections`` every idle session, new or old, gets ``smtp_stress_idle_timeout``
  (Postfix's stress mode). Idle means no byte from the client: a slow DATA transfer is not
  idle, and neither is a session waiting for our own answer;
- **an error cap per session** (Postfix's ``smtpd_hard_error_limit``): after
  ``smtp_hard_error_limit`` refused commands without a delivered mail, the next command gets
  ``421 4.7.0`` and the connection is closed;
- **implicit TLS that counts as TLS**: aiosmtpd marks a session secure only after its own
  STARTTLS, so on a port wrapped in TLS by ``create_server(ssl=...)`` it would leave
  ``session.ssl`` empty and refuse AUTH (#274, #281); here the session is marked from the
  TLS transport itself;
- **AUTH checked off the loop**: PLAIN and LOGIN (only after TLS) are parsed by aiosmtpd, and
  the password is checked by :class:`~mailbot.smtp.submitters.Submitters` in a thread; after
  :data:`MAX_AUTH_FAILURES` wrong tries the connection is closed.

Usage (what :func:`mailbot.serve.running` does)::

    async with listening(settings, handler, limits) as ports:
        print(ports.smtp, ports.smtps)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial, update_wrapper
from typing import Any, cast

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, Session

from mailbot.config import Settings
from mailbot.smtp.handler import MailbotSMTP, ReceiveHandler
from mailbot.smtp.ratelimit import Limits
from mailbot.smtp.replies import AUTH_FAILED, AUTH_TOO_MANY, IDLE_TIMEOUT, TOO_MANY_ERRORS
from mailbot.smtp.submitters import Submitters
from mailbot.smtp.tls import server_context

log = logging.getLogger(__name__)

MAX_AUTH_FAILURES = 3
STRESS_LOG_INTERVAL = 60.0  # seconds between two "stress mode" warnings in the log
# The TLS details aiosmtpd records for a STARTTLS session, read from an implicit-TLS one.
_TLS_INFO = ("sslcontext", "ssl_object", "peercert", "cipher", "compression")


class OpenSessions:
    """The open sessions of one node's listeners, so that stress mode reaches the idle ones."""

    def __init__(self) -> None:
        self.all: set[GuardedSMTP] = set()
        self._warned_at = -STRESS_LOG_INTERVAL

    def stress_began(self, limits: Limits) -> None:
        for session in list(self.all):
            session.shorten_idle_timeout(limits.stress_idle_timeout)
        now = time.monotonic()
        if now - self._warned_at >= STRESS_LOG_INTERVAL:
            self._warned_at = now
            log.warning(
                "%d SMTP connections open: idle sessions now close after %.0f s",
                limits.open_total,
                limits.stress_idle_timeout,
            )


class GuardedSMTP(MailbotSMTP):
    def __init__(
        self,
        handler: ReceiveHandler,
        *,
        limits: Limits,
        submitters: Submitters,
        implicit_tls: bool = False,
        open_sessions: OpenSessions | None = None,
        **options: Any,
    ) -> None:
        # The authenticator only hands the parsed credentials back to auth_PLAIN/auth_LOGIN
        # below, which check them in a thread (aiosmtpd calls authenticators synchronously).
        super().__init__(handler, authenticator=_pass_through, auth_require_tls=True, **options)
        self.limits = limits
        self.submitters = submitters
        self.implicit_tls = implicit_tls
        self.open_sessions = open_sessions or OpenSessions()
        self._refusal: str | None = None
        self._counted_ip: str | None = None
        self._counted = False
        self._auth_failures = 0
        self._errors = 0  # refused commands since the last delivered mail
        self._last_code = ""
        self._leaving = False  # said goodbye: nothing more is read or answered
        self._in_hook = 0  # our own work in progress: the client is waiting, not idle
        # Every command first checks the error cap (unknown commands are capped by aiosmtpd).
        self._smtp_methods = {
            name: self._capped(name, method) for name, method in self._smtp_methods.items()
        }

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        upgraded = self._original_transport is not None  # the second call, after STARTTLS
        super().connection_made(transport)
        if upgraded:
            return
        assert self.session is not None
        ip = _ip(self.session)
        was_stressed = self.limits.stressed
        self._refusal = self.limits.connect(ip)
        if self._refusal is None:
            self._counted, self._counted_ip = True, ip
            self.open_sessions.all.add(self)
            if self.limits.stressed and not was_stressed:
                self.open_sessions.stress_began(self.limits)
        if self.implicit_tls:
            self.session.ssl = {name: transport.get_extra_info(name) for name in _TLS_INFO}
            # What aiosmtpd tests for "is this session encrypted" (EHLO's AUTH, AUTH itself).
            self._tls_protocol = getattr(transport, "_ssl_protocol", None)

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self.limits.disconnect(self._counted_ip)
        self.open_sessions.all.discard(self)
        super().connection_lost(error)

    # --- idle timeout ------------------------------------------------------------------

    def _reset_timeout(self, duration: float | None = None) -> None:
        super()._reset_timeout(duration or self.limits.current_idle_timeout())

    def shorten_idle_timeout(self, seconds: float) -> None:
        """Close this session ``seconds`` from now if it stays idle, unless sooner anyway."""
        handle = self._timeout_handle
        if self.transport is None or handle is None or handle.cancelled():
            return
        if handle.when() - self.loop.time() > seconds:
            self._reset_timeout(seconds)

    def data_received(self, data: bytes) -> None:
        self._reset_timeout()  # a client that is sending is not idle (a slow DATA transfer)
        super().data_received(data)

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        self._in_hook += 1
        try:
            return await super()._call_handler_hook(command, *args)
        finally:
            self._in_hook -= 1
            if self.transport is not None:
                self._reset_timeout()  # idle counts from our answer, not from the command

    def _timeout_cb(self) -> None:
        if self.transport is None:
            return
        if self._in_hook:  # storing or looking up: we keep the client waiting
            self._reset_timeout()
            return
        assert self.session is not None
        # Mid-handshake (after STARTTLS, before TLS is up) a plain line would only garble it.
        handshaking = self._original_transport is not None and self.session.ssl is None
        if not handshaking and not self.transport.is_closing():
            self._leaving = True
            self._writer.write(f"{IDLE_TIMEOUT}\r\n".encode())
        # aiosmtpd is typed, all but this callback.
        cast(Callable[[], None], super()._timeout_cb)()

    # --- error cap -----------------------------------------------------------------------

    def _capped(
        self, name: str, method: Callable[[str | None], Awaitable[None]]
    ) -> Callable[[str | None], Awaitable[None]]:
        async def run(arg: str | None) -> None:
            if self._leaving:
                return
            if self._over_error_limit():
                await self._too_many_errors()
                return
            await method(arg)
            if name == "DATA" and self._last_code.startswith("2"):
                self._errors = 0  # a delivered mail: the client is no prober

        # HELP reads the command's syntax from the method's attributes.
        return update_wrapper(run, method)

    def _over_error_limit(self) -> bool:
        return 0 < self.limits.hard_error_limit <= self._errors

    async def _too_many_errors(self) -> None:
        log.info(
            "closing the connection of %r after %d errors",
            self.session and self.session.peer,
            self._errors,
        )
        await super().push(str(TOO_MANY_ERRORS))
        self._leaving = True
        if self.transport is not None:
            self.transport.close()

    async def push(self, status: str | bytes) -> None:
        if self._leaving:
            return
        code = status[:3].decode("ascii", "replace") if isinstance(status, bytes) else status[:3]
        if code[:1] in ("4", "5") and code != "421":  # a 421 says goodbye itself
            if self._over_error_limit():  # a line no command handled (junk, too long)
                await self._too_many_errors()
                return
            self._errors += 1
        self._last_code = code
        await super().push(status)

    async def _handle_client(self) -> None:
        if self._refusal is not None:
            log.info(
                "refused a connection from %r: %s",
                self.session and self.session.peer,
                self._refusal,
            )
            await self.push(self._refusal)
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._checked(await super().auth_PLAIN(server, args))

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._checked(await super().auth_LOGIN(server, args))

    async def _checked(self, parsed: AuthResult) -> AuthResult:
        if not parsed.success or not isinstance(parsed.auth_data, LoginPassword):
            return parsed  # malformed: aiosmtpd has answered it already
        name = await self.submitters.verify(parsed.auth_data.login, parsed.auth_data.password)
        if name is not None:
            log.info("%r authenticated as %r", self.session and self.session.peer, name)
            return AuthResult(success=True, auth_data=name)
        self._auth_failures += 1
        if self._auth_failures < MAX_AUTH_FAILURES:
            return AuthResult(success=False, handled=False, message=str(AUTH_FAILED))
        await self.push(str(AUTH_TOO_MANY))
        assert self.transport is not None
        self.transport.close()
        return AuthResult(success=False, handled=True)


def _pass_through(
    server: SMTP, session: Session, envelope: object, mechanism: str, data: object
) -> AuthResult:
    return AuthResult(success=True, auth_data=data)


def _ip(session: Session) -> str | None:
    peer: Any = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


@dataclass
class Ports:
    smtp: int
    smtps: int | None = None


@contextlib.asynccontextmanager
async def listening(
    settings: Settings, handler: ReceiveHandler, limits: Limits
) -> AsyncIterator[Ports]:
    """Start the SMTP port (with STARTTLS unless ``starttls`` is off) and, when
    ``smtps_port`` is set, the implicit-TLS port; close both on exit."""
    context = await server_context(settings)
    submitters = Submitters(settings.smtp_users)
    factory = partial(
        GuardedSMTP,
        handler,
        limits=limits,
        submitters=submitters,
        open_sessions=OpenSessions(),  # one for both ports: they share the limits
        timeout=settings.smtp_idle_timeout,
        hostname=settings.hostname,  # without it aiosmtpd resolves the FQDN per session
        ident="mailbot ESMTP",
        data_size_limit=settings.max_message_size,
        enable_SMTPUTF8=True,
        decode_data=False,
    )
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        starttls = context if settings.starttls else None
        plain = await loop.create_server(
            partial(factory, tls_context=starttls, require_starttls=settings.require_starttls),
            host=settings.smtp_host,
            port=settings.smtp_port,
        )
        stack.push_async_callback(_close, plain)
        ports = Ports(plain.sockets[0].getsockname()[1])
        log.info(
            "SMTP listening on %s:%s (STARTTLS %s)",
            settings.smtp_host,
            ports.smtp,
            "required" if starttls and settings.require_starttls else "on" if starttls else "off",
        )
        if settings.smtps_port is not None:
            assert context is not None  # server_context makes one whenever smtps_port is set
            # The context goes to create_server itself: the whole connection is TLS.
            wrapped = await loop.create_server(
                partial(factory, implicit_tls=True),
                host=settings.smtp_host,
                port=settings.smtps_port,
                ssl=context,
            )
            stack.push_async_callback(_close, wrapped)
            ports.smtps = wrapped.sockets[0].getsockname()[1]
            log.info("SMTP with implicit TLS listening on %s:%s", settings.smtp_host, ports.smtps)
        yield ports


async def _close(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()
