"""Who may talk to the HTTP side: closed by default.

- :func:`check_exposure`, at start: bound to anything but loopback, the node refuses to start
  without an API token, unless ``insecure_no_auth`` says so explicitly (then it warns loudly).
- :class:`Guard`, per request: the Host header must name us (``allowed_hosts`` plus
  ``http_host``; ports ignored), which stops DNS rebinding against a loopback page; with an
  API token, every route but ``/health`` needs ``Authorization: Bearer <token>``. A request
  that writes (any method but GET, HEAD, OPTIONS) and every WebSocket must come from our
  own origin when a browser sends it (``Origin`` and ``Sec-Fetch-Site``): another site's
  page can neither post to the API (CSRF) nor listen to the live inbox.

Refusals are JSON, like every other answer. The token is compared in constant time and is
never logged or shown.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from mailbot.config import Settings
from mailbot.errors import ConfigError

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health", "/health/live", "/health/ready"})
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


def check_exposure(settings: Settings) -> None:
    """Raise ConfigError when the API would be open to the network without credentials."""
    if api_token(settings) is not None or is_loopback(settings.http_host):
        return
    if not settings.insecure_no_auth:
        raise ConfigError(
            f"refusing to serve the HTTP API on {settings.http_host or 'every interface'} "
            "without credentials: set MAILBOT_API_TOKEN (clients then send "
            "'Authorization: Bearer <token>'), bind MAILBOT_HTTP_HOST to 127.0.0.1, or pass "
            "--insecure-no-auth if something in front of mailbot does the checking"
        )
    log.warning(
        "INSECURE: the HTTP API on %s has no credentials (--insecure-no-auth): anyone who "
        "can reach it reads every stored message",
        settings.http_host or "every interface",
    )


def _host_name(value: str) -> str:
    """The name in a Host header, without its port: ``[::1]:8025`` → ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else ""
    return value.rpartition(":")[0] if value.count(":") == 1 else value


class Guard:
    """ASGI middleware: the Host allow-list, then the bearer token."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        names = [*settings.allowed_hosts, settings.http_host]
        self.hosts = frozenset(n.strip().strip("[]").lower().rstrip(".") for n in names if n)
        self.expected = api_token(settings)

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
        if self.expected is not None and scope["path"] not in OPEN_PATHS:
            scheme, _, given = headers.get(b"authorization", b"").strip().partition(b" ")
            # compare_digest: the time taken says nothing about how much of the token matched.
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.expected):
                await _refuse(
                    send, 401, "an API token is needed", scope, [(b"www-authenticate", b"Bearer")]
                )
                return
        await self.app(scope, receive, send)

    def _same_origin(self, headers: dict[bytes, bytes], host: str) -> bool:
        """No Origin (not a browser, or a same-origin GET): fine. Else it must be us."""
        if headers.get(b"sec-fetch-site", b"") == b"cross-site":
            return False
        origin = headers.get(b"origin")
        if origin is None:
            return True
        name = _host_name(origin.decode("latin-1").partition("://")[2]).rstrip(".")
        return name == host and name in self.hosts


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
