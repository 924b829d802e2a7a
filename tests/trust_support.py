"""Shared pieces of the sender-trust tests: zone data, signing keys, threads, row queries."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from mailbot import conversations, tokens
from mailbot.models import Comment, InboundMessage, OutboundMessage, Participant
from mailbot.serve import Node

# Mail from 127.0.0.1 passes SPF for example.com; 127.0.0.2 is "somebody else's server".
HOME_IP, FOREIGN_IP = "127.0.0.1", "127.0.0.2"


@lru_cache(maxsize=1)
def signing_key() -> tuple[bytes, str]:
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
    header = dkim.sign(raw, b"sel", domain.encode(), signing_key()[0])
    return header + raw


@dataclass
class Thread:
    key: str
    addresses: dict[str, str]  # person → their reply address
    ids: dict[str, int]  # person → participant id


async def make_thread(
    node: Node,
    key: str = "issue-1",
    people: tuple[str, ...] = ("alice", "bob"),
    bot: str = "comments",
    domain: str = "example.com",
) -> Thread:
    async with node.sessions() as session, session.begin():
        convo = await conversations.ensure(
            session, key, node.settings.domain, subject=f"Issue {key}", bot=bot
        )
        addresses, ids = {}, {}
        for person in people:
            participant = await conversations.ensure_participant(
                session, convo, f"{person}@{domain}", person.title()
            )
            token = await tokens.issue(session, participant, timedelta(days=30))
            await session.flush()
            addresses[person] = tokens.reply_address(token, node.settings.domain)
            ids[person] = participant.id
    return Thread(key, addresses, ids)


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
