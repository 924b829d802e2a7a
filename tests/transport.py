"""Clients for the transport tests: TLS that trusts the node's own certificate, raw greetings."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiosmtplib

from mailbot.serve import Node
from mailbot.smtp.tls import SELF_SIGNED_CERT

PASSWORD = "correct horse battery staple"


def trusting(cert: Path) -> ssl.SSLContext:
    """A client context that verifies the server against ``cert`` (and its host name)."""
    return ssl.create_default_context(cafile=str(cert))


def node_cert(node: Node) -> Path:
    return node.settings.home_dir / SELF_SIGNED_CERT


def client(node: Node, *, implicit: bool = False) -> aiosmtplib.SMTP:
    """An aiosmtplib client for the node's plain port (STARTTLS only when asked) or its
    implicit-TLS port; it checks the certificate against the node's kept pair."""
    return aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=node.smtps_port if implicit else node.smtp_port,
        use_tls=implicit,
        start_tls=False,
        tls_context=trusting(node_cert(node)),
        timeout=10,
    )


async def greeting(port: int) -> tuple[str, bool]:
    """The first line a new connection gets, and whether the server then closed it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        line = (await asyncio.wait_for(reader.readline(), 10)).decode().strip()
        closed = (await asyncio.wait_for(reader.read(), 10)) == b"" if line[:3] != "220" else False
        return line, closed
    finally:
        writer.close()
        await writer.wait_closed()
