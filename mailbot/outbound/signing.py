"""DKIM signatures on the mail we send (dkimpy), so that it passes DMARC as our domain.

With ``dkim_key`` and ``dkim_selector`` set, every message is signed as it is handed to the
transport: in a thread (RSA is CPU work), with the key as it is now, over the message in
CRLF form, which is what SMTP carries. The headers a reader sees and a forwarder must not
change are signed, and signed once more than they occur ("oversigning"), so that nobody can
add one on the way: From, To, Subject, Date, threading, Reply-To, List-Id and the RFC 8058
List-Unsubscribe pair (which must be covered by a signature to count), Auto-Submitted and
the MIME headers. ``mailbot dkim keygen`` makes a key (RSA 2048 or Ed25519, RFC 8463) and
prints the DNS record to publish; ``mailbot dkim check`` compares it with what DNS says.

dkimpy does the RSA arithmetic in pure Python: 11-14 ms a signature on this machine, holding
the GIL the whole time, so the event loop stood still while the "thread" signed (60 mails/s at
most). :func:`_rsa_sign` gives dkimpy the same signature from OpenSSL (through cryptography):
PKCS#1 v1.5 is deterministic, so the bytes are identical, which a test checks against dkimpy's
own function on every run; dkimpy still canonicalises, hashes and writes the header.
"""

from __future__ import annotations

import asyncio
import base64
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from mailbot.addresses import domain_of
from mailbot.config import Settings
from mailbot.errors import ConfigError

RSA = b"rsa-sha256"
ED25519 = b"ed25519-sha256"
SIGNED = (
    b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"in-reply-to", b"references",
    b"reply-to", b"list-id", b"list-unsubscribe", b"list-unsubscribe-post", b"auto-submitted",
    b"mime-version", b"content-type", b"content-transfer-encoding",
)  # fmt: skip


@dataclass(frozen=True)
class Key:
    selector: str
    domain: str
    private: bytes  # PEM (RSA, PKCS#1) or the base64 of the 32-byte seed (Ed25519)
    algorithm: bytes

    def sign(self, raw: bytes) -> bytes:
        """``raw`` in CRLF form with a DKIM-Signature on top."""
        crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        names = [line.split(b":", 1)[0].strip().lower() for line in _header_lines(crlf)]
        # Each once more than it occurs (an absent one once): none can be added on the way.
        signed = [name for name in SIGNED for _ in range(names.count(name) + 1)]
        header: bytes = dkim.sign(
            crlf,
            self.selector.encode(),
            self.domain.encode(),
            self.private,
            include_headers=signed,
            signature_algorithm=self.algorithm,
            canonicalize=(b"relaxed", b"relaxed"),  # survives relays that refold or re-space
            linesep=b"\r\n",
        )
        return header + crlf

    async def sign_async(self, raw: bytes) -> bytes:
        return await asyncio.to_thread(self.sign, raw)


def _header_lines(raw: bytes) -> list[bytes]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return [line for line in head.split(b"\r\n") if line and line[:1] not in (b" ", b"\t")]


_loaded: dict[tuple[str, str, str, float], Key] = {}


def key_for(settings: Settings) -> Key | None:
    """The signing key the settings name (read again when its file changes), or None."""
    if settings.dkim_key is None:
        return None
    if not settings.dkim_selector:
        raise ConfigError("MAILBOT_DKIM_KEY is set without MAILBOT_DKIM_SELECTOR")
    domain = settings.dkim_domain or domain_of(settings.from_address)
    path = Path(settings.dkim_key)
    try:
        stamp = path.stat().st_mtime
    except OSError as exc:
        raise ConfigError(f"MAILBOT_DKIM_KEY: cannot read {path}: {exc.strerror}") from exc
    cache = (str(path), settings.dkim_selector, domain, stamp)
    if cache not in _loaded:
        _loaded.clear()
        _loaded[cache] = read_key(path, settings.dkim_selector, domain)
    return _loaded[cache]


def read_key(path: Path, selector: str, domain: str) -> Key:
    private = path.read_bytes().strip()
    if b"-----BEGIN RSA PRIVATE KEY-----" in private:
        return Key(selector, domain, private + b"\n", RSA)
    try:
        seed = base64.b64decode(private, validate=True)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise ConfigError(
            f"{path} is neither an RSA key in PEM (PKCS#1) nor an Ed25519 seed in base64: "
            "make one with `mailbot dkim keygen`"
        )
    return Key(selector, domain, private, ED25519)


def public_record(key: Key) -> str:
    """The TXT record's value for ``key`` (``v=DKIM1; k=...; p=...``)."""
    if key.algorithm == ED25519:
        from nacl.signing import SigningKey

        verify = SigningKey(base64.b64decode(key.private)).verify_key.encode()
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(verify).decode()}"
    from cryptography.hazmat.primitives import serialization

    loaded = serialization.load_pem_private_key(key.private, password=None)
    der = loaded.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def record_name(key: Key) -> str:
    return f"{key.selector}._domainkey.{key.domain}"


def new_key(algorithm: str) -> bytes:
    """A new private key in the form :func:`read_key` reads: ``rsa`` (2048) or ``ed25519``."""
    if algorithm == "ed25519":
        from nacl.signing import SigningKey

        return base64.b64encode(bytes(SigningKey.generate())) + b"\n"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    made = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return made.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # PKCS#1, what dkimpy reads
        serialization.NoEncryption(),
    )


@functools.lru_cache(maxsize=8)
def _openssl_key(numbers: tuple[int, ...]) -> rsa.RSAPrivateKey:
    n, e, d, p, q, dmp1, dmq1, iqmp = numbers
    public = rsa.RSAPublicNumbers(e, n)
    return rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, public).private_key()


_DIGESTS: dict[str, hashes.HashAlgorithm] = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}


def _rsa_sign(hash: Any, pk: dict[str, int]) -> bytes:  # noqa: A002 - dkimpy's own names
    """dkimpy's ``RSASSA_PKCS1_v1_5_sign(hash, private_key)``, done by OpenSSL."""
    names = ("modulus", "publicExponent", "privateExponent", "prime1", "prime2")
    key = _openssl_key(
        (*(pk[n] for n in names), pk["exponent1"], pk["exponent2"], pk["coefficient"])
    )
    digest = _DIGESTS[hash.name.lower()]
    return key.sign(hash.digest(), padding.PKCS1v15(), utils.Prehashed(digest))


dkim.RSASSA_PKCS1_v1_5_sign = _rsa_sign  # what dkim.DKIM.sign calls for rsa-sha256
