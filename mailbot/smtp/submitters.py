"""Trusted submitters: who may log in with SMTP AUTH, by name and scrypt password hash.

Passwords are never stored: ``mailbot smtp-password NAME`` prints a line for the
``[smtp_users]`` table of ``mailbot.toml`` (or ``MAILBOT_SMTP_USERS`` as JSON)::

    [smtp_users]
    webapp = "scrypt$16384$8$1$<salt>$<hash>"

scrypt (RFC 7914, in Python's standard library through OpenSSL) costs about 16 MiB and tens
of milliseconds per check, so it runs in a thread, never on the SMTP event loop. An unknown
name is checked against a dummy hash, so the time taken does not tell which names exist.

What AUTH gives: the session is recorded with the name (``auth_user`` on the stored message)
and is not held to the per-IP and per-sender message limits. What it does not give: relaying.
A foreign recipient is refused to everyone.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

from mailbot.errors import ConfigError

SCHEME = "scrypt"
N, R, P = 2**14, 8, 1
MAXMEM = 64 * 1024 * 1024


@dataclass(frozen=True)
class PasswordHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, encoded: str) -> PasswordHash:
        try:
            scheme, n, r, p, salt, digest = encoded.split("$")
            if scheme != SCHEME:
                raise ValueError(scheme)
            return cls(int(n), int(r), int(p), _unb64(salt), _unb64(digest))
        except ValueError:
            raise ValueError(
                "not a password hash from `mailbot smtp-password` (scrypt$n$r$p$salt$hash)"
            ) from None

    def matches(self, password: bytes) -> bool:
        derived = hashlib.scrypt(
            password, salt=self.salt, n=self.n, r=self.r, p=self.p, maxmem=MAXMEM, dklen=32
        )
        return hmac.compare_digest(derived, self.digest)

    def __str__(self) -> str:
        return f"{SCHEME}${self.n}${self.r}${self.p}${_b64(self.salt)}${_b64(self.digest)}"


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=N, r=R, p=P, maxmem=MAXMEM, dklen=32
    )
    return str(PasswordHash(N, R, P, salt, digest))


@functools.cache
def _dummy() -> PasswordHash:
    # Checked in place of an unknown name's hash, so a miss costs as much as a wrong password.
    return PasswordHash.parse(hash_password("mailbot: no such submitter"))


class Submitters:
    """The configured names and hashes; :meth:`verify` is the check AUTH uses."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.hashes: dict[str, PasswordHash] = {}
        for name, encoded in users.items():
            try:
                self.hashes[name] = PasswordHash.parse(encoded)
            except ValueError as exc:
                raise ConfigError(f"smtp_users[{name!r}]: {exc}") from exc

    async def verify(self, login: bytes, password: bytes) -> str | None:
        """The submitter's name when the password is theirs, else None."""
        name = login.decode("utf-8", "replace")
        known = self.hashes.get(name)
        matched = await asyncio.to_thread((known or _dummy()).matches, password)
        return name if matched and known is not None else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
