"""Who may talk to the HTTP side: closed by default.

- :func:`check_exposure`, at start: bound to anything but loopback, the node refuses to start
  without an API token, unless ``insecure_no_auth`` says so explicitly (then it warns loudly).
- :class:`Guard`, per request: the Host header must name us (``allowed_hosts`` plus
  ``http_host``; ports ignored), which stops DNS rebinding against a loopback page; with an
  API token, every route but ``/health`` needs ``Authorization: Bearer <token>``.

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

OPEN_PATHS = frozenset({"/health"})
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
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = _host_name(headers.get(b"host", b"").decode("latin-1")).rstrip(".")
        if host not in self.hosts:
            await _refuse(send, 400, "this Host is not served here (see allowed_hosts)")
            return
        if self.expected is not None and scope["path"] not in OPEN_PATHS:
            scheme, _, given = headers.get(b"authorization", b"").strip().partition(b" ")
            # compare_digest: the time taken says nothing about how much of the token matched.
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.expected):
                await _refuse(
                    send, 401, "an API token is needed", [(b"www-authenticate", b"Bearer")]
                )
                return
        await self.app(scope, receive, send)


async def _refuse(
    send: Send, status: int, error: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"error": error}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
