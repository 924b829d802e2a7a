"""Shared pieces of the sender-trust tests: zone data, signing keys, threads, row queries."""

from __future__ import annotations

import base64
from functools import lru_cache
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from mailbot import testing
from mailbot.serve import Node
from mailbot.store.models import Comment, InboundMessage, OutboundMessage, Participant

# Mail from 127.0.0.1 passes SPF for example.com; 127.0.0.2 is "somebody else's server".
HOME_IP, FOREIGN_IP = "127.0.0.1", "127.0.0.2"


def new_keypair() -> tuple[bytes, str]:
    """A fresh RSA key: the PEM private key, and the DKIM TXT record publishing it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, f"TXT v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


signing_key = lru_cache(maxsize=1)(new_keypair)


def zone() -> dict[str, list[str]]:
    return {
        "example.com": [f"TXT v=spf1 ip4:{HOME_IP} -all"],
        "_dmarc.example.com": ["TXT v=DMARC1; p=reject"],
        "sel._domainkey.example.com": [signing_key()[1]],
        "example.net": [f"TXT v=spf1 ip4:{HOME_IP} -all"],  # SPF, no DMARC
        "evil.test": [f"TXT v=spf1 ip4:{HOME_IP} ip4:{FOREIGN_IP} -all"],
    }


def dkim_sign(raw: bytes, domain: str = "example.com") -> bytes:
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    header: bytes = dkim.sign(raw, b"sel", domain.encode(), signing_key()[0])
    return header + raw


async def make_thread(
    node: Node,
    key: str = "issue-1",
    people: tuple[str, ...] = ("alice", "bob"),
    bot: str = "comments",
    domain: str = "example.com",
) -> testing.Thread:
    """mailbot.testing's thread, with two people by default: the trust tests count mail."""
    return await testing.make_thread(node, key, people, bot=bot, domain=domain)


async def outbound_rows(node: Node) -> list[OutboundMessage]:
    async with node.sessions() as session:
        return list(await session.scalars(select(OutboundMessage).order_by(OutboundMessage.id)))


async def comments(node: Node) -> list[Comment]:
    async with node.sessions() as session:
        return list(await session.scalars(select(Comment).order_by(Comment.id)))


async def participant(node: Node, participant_id: int) -> Participant:
    async with node.sessions() as session:
        found = await session.get(Participant, participant_id)
        assert found is not None
        return found


async def inbound(node: Node, inbound_id: int) -> InboundMessage:
    async with node.sessions() as session:
        found = await session.get(InboundMessage, inbound_id)
        assert found is not None
        return found


def outcome(row: InboundMessage) -> dict[str, Any]:
    return row.outcome or {}
