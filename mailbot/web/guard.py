"""Who may talk to the HTTP side: closed by default.

- :func:`check_exposure`, at start: bound to anything but loopback, the node refuses to start
  without an API token (``MAILBOT_API_TOKEN``, or a live one made with ``mailbot api-token
  create``), unless ``insecure_no_auth`` says so explicitly (then it warns loudly).
- :class:`Guard`, per request: the Host header must name us (``allowed_hosts`` plus
  ``http_host``; ports ignored), which stops DNS rebinding against a loopback page; with an
  API token, every route but ``/health``, the login form, the signed one-click
  ``/unsubscribe/`` links and the providers' ``/ingress/`` posts (each checked by its own
  signature or credentials) needs a token whenever one is configured or the node is bound
  beyond loopback: the configured one
  or one made with ``mailbot api-token create`` (stored hashed), as ``Authorization: Bearer
  <token>`` or as the page's cookie (set by ``POST /api/session``, HttpOnly, SameSite=Strict).
  A person without one who asks for a page is sent to ``/login``. A request
  that writes (any method but GET, HEAD, OPTIONS) and every WebSocket must come from our
  own origin when a browser sends it (``Origin`` and ``Sec-Fetch-Site``): another site's
  page can neither post to the API (CSRF) nor listen to the live inbox.

Refusals are JSON, like every other answer. The token is compared in constant time and is
never logged or shown.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import time
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from mailbot.config import Settings
from mailbot.errors import ConfigError
from mailbot.store import api_tokens
from mailbot.store.db import Sessions

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health", "/health/live", "/health/ready", "/login", "/favicon.ico"})
PAGES = ("/", "/conversations", "/outbox", "/docs")
COOKIE = b"mailbot_token"
REMEMBER_SECONDS = 10.0  # a stored token's check is reused this long (a revoke waits as long)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or "" (every interface): it may be reachable from outside


def api_token(settings: Settings) -> bytes | None:
    """The configured token, or None; one too short to be a secret is a ConfigError."""
    if settings.api_token is None:
        return None
    token = settings.api_token.get_secret_value().strip()
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"MAILBOT_API_TOKEN is shorter than {MIN_TOKEN_LENGTH} characters: use a random "
            "one, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token.encode()


def needs_token(settings: Settings) -> bool:
    """Whether requests (but the open ones) must carry a token: one is configured, or the
    node is bound beyond loopback without ``insecure_no_auth``."""
    if api_token(settings) is not None:
        return True
    return not (is_loopback(settings.http_host) or settings.insecure_no_auth)


def check_exposure(settings: Settings, stored_tokens: int | None = None) -> None:
    """Raise ConfigError when the API would be open to the network without credentials.
    ``stored_tokens``: how many live tokens ``mailbot api-token create`` made; None when
    the database was not asked (``mailbot config check``): the node asks at start."""
    if api_token(settings) is not None or is_loopback(settings.http_host):
        return
    if not settings.insecure_no_auth:
        if stored_tokens is None or stored_tokens > 0:
            return
        raise ConfigError(
            f"refusing to serve the HTTP API on {settings.http_host or 'every interface'} "
            "without credentials: set MAILBOT_API_TOKEN or make a token with `mailbot "
            "api-token create NAME` (clients then send 'Authorization: Bearer <token>'), "
            "bind MAILBOT_HTTP_HOST to 127.0.0.1, or pass --insecure-no-auth if something "
            "in front of mailbot does the checking"
        )
    log.warning(
        "INSECURE: the HTTP API on %s has no credentials (--insecure-no-auth): anyone who "
        "can reach it reads every stored message",
        settings.http_host or "every interface",
    )


async def check_stored_tokens(settings: Settings, sessions: Sessions) -> None:
    """:func:`check_exposure` once the database is open: beyond loopback with no token
    configured, a live token made with ``mailbot api-token create`` must exist."""
    if api_token(settings) is None and needs_token(settings):
        async with sessions() as session:
            check_exposure(settings, await api_tokens.live_count(session))


async def check_exposure_now(settings: Settings) -> None:
    """:func:`check_exposure` for ``mailbot config check``, asking the database for stored
    tokens when it has to; a database that cannot say counts as none."""
    if api_token(settings) is not None or not needs_token(settings):
        check_exposure(settings)
        return
    from mailbot.store.db import database, sqlite_file  # the database only when it is asked

    path = sqlite_file(settings.database_url)
    if settings.is_sqlite and not (path and Path(path).exists()):
        check_exposure(settings, 0)  # no file yet: no token in it (and none made by asking)
        return
    try:
        async with database(settings.database_url) as (_, sessions):
            async with sessions() as session:
                stored = await api_tokens.live_count(session)
    except Exception:  # noqa: BLE001 - not migrated, not there: no token can be shown
        stored = 0
    check_exposure(settings, stored)


def _host_name(value: str) -> str:
    """The name in a Host header, without its port: ``[::1]:8025`` → ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else ""
    return value.rpartition(":")[0] if value.count(":") == 1 else value


class Guard:
    """ASGI middleware: the Host allow-list, then the bearer token."""

    def __init__(self, app: ASGIApp, settings: Settings, sessions: Sessions | None = None) -> None:
        self.app = app
        self.sessions = sessions
        self._seen: dict[str, tuple[bool, float]] = {}  # token hash → (valid, until when)
        public = settings.public_url.host if settings.public_url is not None else None
        names = [*settings.allowed_hosts, settings.http_host, public]
        self.hosts = frozenset(n.strip().strip("[]").lower().rstrip(".") for n in names if n)
        self.expected = api_token(settings)
        self.required = needs_token(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = _host_name(headers.get(b"host", b"").decode("latin-1")).rstrip(".")
        if host not in self.hosts:
            await _refuse(send, 400, "this Host is not served here (see allowed_hosts)", scope)
            return
        writes = scope["type"] == "websocket" or scope.get("method") not in SAFE_METHODS
        if writes and not self._same_origin(headers, host):
            await _refuse(send, 403, "a request from another site's page is refused", scope)
            return
        path = scope["path"]
        if self.required and not _open(path, scope.get("method")):
            given = _credential(headers)
            if given is None or not await self._valid(given):
                if scope["type"] == "http" and scope.get("method") == "GET" and _is_page(path):
                    await _redirect(send, "/login")  # a person at the page: the login form
                    return
                await _refuse(
                    send, 401, "an API token is needed", scope, [(b"www-authenticate", b"Bearer")]
                )
                return
        await self.app(scope, receive, send)

    async def _valid(self, given: bytes) -> bool:
        """:func:`token_ok`, its answer for a stored token remembered a few seconds."""
        key = hashlib.sha256(given).hexdigest()
        now = time.monotonic()
        known = self._seen.get(key)
        if known is not None and known[1] > now:
            return known[0]
        ok = await token_ok(self.expected, self.sessions, given)
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[key] = (ok, now + REMEMBER_SECONDS)
        return ok

    def _same_origin(self, headers: dict[bytes, bytes], host: str) -> bool:
        """No Origin (not a browser, or a same-origin GET): fine. Else it must be us: the
        same host *and port* as the request's Host header (a page on another port of
        localhost is another site). The scheme is not compared, so TLS ended by a proxy
        in front still works."""
        fetch_site = headers.get(b"sec-fetch-site", b"")
        if fetch_site in (b"cross-site", b"same-site"):
            return False
        origin = headers.get(b"origin")
        if origin is None:
            return True
        netloc = origin.decode("latin-1").strip().lower().partition("://")[2].rstrip("/")
        own = headers.get(b"host", b"").decode("latin-1").strip().lower()
        name = _host_name(netloc).rstrip(".")
        return netloc == own and name == host and name in self.hosts


async def token_ok(expected: bytes | None, sessions: Sessions | None, given: bytes) -> bool:
    """The configured token, or a live one made with ``mailbot api-token create``."""
    # compare_digest: the time taken says nothing about how much of the token matched.
    if expected is not None and hmac.compare_digest(given, expected):
        return True
    if sessions is None:
        return False
    async with sessions() as session, session.begin():
        return await api_tokens.valid(session, given.decode("ascii", errors="replace"))


def _open(path: str, method: str | None) -> bool:
    if path in OPEN_PATHS or path.startswith(("/static/", "/docs-assets/", "/unsubscribe/")):
        return True  # an unsubscribe link carries its own credential (its signature)
    if path.startswith("/ingress/"):
        return True  # a provider's post proves itself (mailbot/ingress/); no token to send
    return path == "/api/session" and method == "POST"  # logging in needs no token yet


def _is_page(path: str) -> bool:
    return path in PAGES or path.startswith(("/messages/", "/conversations/"))


def _credential(headers: dict[bytes, bytes]) -> bytes | None:
    """``Authorization: Bearer <token>``, else the page's cookie (set by POST /api/session)."""
    scheme, _, given = headers.get(b"authorization", b"").strip().partition(b" ")
    if scheme.lower() == b"bearer" and given.strip():
        return given.strip()
    for part in headers.get(b"cookie", b"").split(b";"):
        name, _, value = part.strip().partition(b"=")
        if name == COOKIE and value:
            return value
    return None


async def _redirect(send: Send, to: str) -> None:
    headers = [(b"location", to.encode()), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _refuse(
    send: Send,
    status: int,
    error: str,
    scope: Scope,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    if scope["type"] == "websocket":
        # Closing before accepting is answered 403 by the server: the handshake fails.
        await send({"type": "websocket.close", "code": 1008, "reason": error})
        return
    body = json.dumps({"error": error}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
