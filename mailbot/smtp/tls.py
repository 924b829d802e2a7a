"""TLS for the SMTP listener: which certificate it shows, and the context that uses it.

A node offers STARTTLS on its SMTP port (and implicit TLS on ``smtps_port`` when set). With
``tls_cert``/``tls_key`` it uses that pair (from your CA or an ACME client). Without them it
makes a self-signed pair on its first start and keeps it in the data directory
(``smtp-selfsigned.crt``/``.key``), so the same certificate is shown after every restart.

A self-signed certificate is enough for mail between servers: senders do opportunistic TLS
and do not verify the certificate (RFC 7435), so the mail is encrypted either way. People
submitting with AUTH from a mail client should be given a certificate their client trusts.

The key is ECDSA P-256: every TLS 1.2+ stack accepts it and it is made in well under a
millisecond (RSA-2048 takes tens of milliseconds, at every first start of every test node).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailbot.config import Settings
from mailbot.errors import ConfigError

SELF_SIGNED_CERT = "smtp-selfsigned.crt"
SELF_SIGNED_KEY = "smtp-selfsigned.key"
VALID_FOR = datetime.timedelta(days=10 * 365)


async def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The SSL context for the SMTP listeners, or None when TLS is off on every port."""
    if not settings.starttls and settings.smtps_port is None:
        return None
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("set both tls_cert and tls_key (or neither, for a self-signed pair)")
    if settings.tls_cert is not None and settings.tls_key is not None:
        cert, key = settings.tls_cert, settings.tls_key
    else:
        # Key making and file writing stay off the event loop.
        cert, key = await asyncio.to_thread(ensure_self_signed, settings.home_dir, settings)
    return load_context(cert, key)


def load_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # no client certificates asked for
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use the TLS pair {cert} / {key}: {exc}") from exc
    return context


def ensure_self_signed(directory: Path, settings: Settings) -> tuple[Path, Path]:
    """The kept self-signed pair in ``directory``; made (once) if it is not there yet."""
    cert, key = directory / SELF_SIGNED_CERT, directory / SELF_SIGNED_KEY
    if cert.is_file() and key.is_file():
        return cert, key
    directory.mkdir(parents=True, exist_ok=True)
    private_key = ec.generate_private_key(ec.SECP256R1())
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = _self_signed(private_key, settings).public_bytes(serialization.Encoding.PEM)
    # Key first, readable by us only; each file appears whole or not at all.
    _write_atomically(key, key_pem, mode=0o600)
    _write_atomically(cert, cert_pem, mode=0o644)
    return cert, key


def _self_signed(private_key: ec.EllipticCurvePrivateKey, settings: Settings) -> x509.Certificate:
    names: list[x509.GeneralName] = [x509.DNSName(settings.hostname)]
    if settings.domain != settings.hostname:
        names.append(x509.DNSName(settings.domain))
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(settings.smtp_host)))
    except ValueError:
        pass  # a host name, already covered or not ours to claim
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, settings.hostname)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private_key, hashes.SHA256())
    )


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
