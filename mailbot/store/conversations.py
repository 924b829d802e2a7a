"""Conversations, participants and comments: the records bots read and write."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from mailbot import headers
from mailbot.errors import Busy
from mailbot.store.db import HOLDING, LOCK_NOT_AVAILABLE
from mailbot.store.models import Comment, Conversation, Participant

KEY_MAX = 200  # the column's size
# A key is the application's identifier: one printable line, or refused (never altered).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


class InvalidKey(ValueError):
    """A conversation key that is empty, too long, or not one printable line."""


def check_key(key: str) -> str:
    if not key.strip():
        raise InvalidKey("a conversation key may not be empty")
    if len(key) > KEY_MAX:
        raise InvalidKey(f"a conversation key has at most {KEY_MAX} characters, not {len(key)}")
    if _UNPRINTABLE.search(key):
        raise InvalidKey(f"a conversation key is one printable line, not {key[:80]!r}")
    return key


async def get(session: AsyncSession, key: str) -> Conversation | None:
    """The conversation with its participants and every comment (views, tools)."""
    return await session.scalar(
        select(Conversation)
        .where(Conversation.key == key)
        .options(
            selectinload(Conversation.participants),
            selectinload(Conversation.comments).selectinload(Comment.participant),
        )
    )


async def lock(session: AsyncSession, conversation: Conversation) -> None:
    """One mail at a time per conversation: its row locked for this transaction
    (``FOR UPDATE`` on PostgreSQL; SQLite's one writer holds everything already), then its
    state read as the last writer left it, so two workers never overwrite each other's state.

    A transaction that holds other rows' locks already (:data:`mailbot.store.db.HOLDING`: a
    batch past its first message) does not wait: another node's batch may hold this row and
    wait for one of ours. It raises :class:`~mailbot.errors.Busy` instead."""
    if session.get_bind().dialect.name == "sqlite":
        # The write transaction began before the conversation was read (mailbot/store/
        # sqlite_driver.py): what this session holds is what the last writer left.
        return
    query = select(Conversation.id).where(Conversation.id == conversation.id)
    try:
        await session.execute(query.with_for_update(nowait=bool(session.info.get(HOLDING))))
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
            raise Busy(f"conversation {conversation.id} is being worked on elsewhere") from exc
        raise
    await session.refresh(conversation, ["state"])


async def for_reply(session: AsyncSession, conversation: Conversation) -> Conversation:
    """The conversation a reply is for (already loaded), with its participants but not its
    comments: the pipeline does this once per message, and a long thread must not make each
    reply cost more than the last. One query."""
    people = await session.scalars(
        select(Participant)
        .where(Participant.conversation_id == conversation.id)
        .order_by(Participant.id)
    )
    # Loaded as the relationship's own value, not as a change to write.
    set_committed_value(conversation, "participants", list(people))
    return conversation


async def ensure(
    session: AsyncSession, key: str, domain: str, *, subject: str = "", bot: str = "comments"
) -> Conversation:
    """The conversation with this key, created if new. The caller commits.

    A new key must pass :func:`check_key` (:class:`InvalidKey` otherwise); the subject is
    stored as mailbot.headers cleans it, since it becomes the subject of every mail."""
    subject = headers.subject(subject)
    conversation = await get(session, key)
    if conversation is None:
        check_key(key)
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        conversation = Conversation(
            key=key,
            subject=subject,
            bot=bot,
            root_message_id=f"<conversation.{digest}@{domain}>",
            participants=[],
            comments=[],
        )
        session.add(conversation)
        await session.flush()
    elif subject and not conversation.subject:
        conversation.subject = subject
    return conversation


async def ensure_participant(
    session: AsyncSession,
    conversation: Conversation,
    email: str,
    name: str = "",
    roles: Iterable[str] | None = None,
) -> Participant:
    """The participant with this address, added if new. The caller commits.

    ``email`` must be exactly one valid address (:class:`mailbot.headers.InvalidAddress`
    otherwise) and is stored normalised and lower-cased; ``name`` is stored cleaned.
    ``roles``, when given, replace the participant's roles (commands may require one)."""
    email = headers.participant_address(email)
    name = headers.display_name(name)
    held = None if roles is None else sorted({str(role) for role in roles})
    for participant in conversation.participants:
        if participant.email == email:
            if name and not participant.name:
                participant.name = name
            if held is not None:
                participant.roles = held
            return participant
    participant = Participant(conversation=conversation, email=email, name=name, roles=held)
    session.add(participant)
    await session.flush()
    return participant


def title(conversation: Conversation) -> str:
    """What a person calls the conversation: its subject, or its key when it has none."""
    return conversation.subject or conversation.key


def display_name(participant: Participant) -> str:
    return participant.name or participant.email.split("@", 1)[0]


def to_json(conversation: Conversation) -> dict[str, Any]:
    return {
        "key": conversation.key,
        "subject": conversation.subject,
        "bot": conversation.bot,
        "created_at": conversation.created_at.isoformat(),
        # The bot's state, less mailbot's own keys (commands waiting for confirmation).
        "state": {k: v for k, v in (conversation.state or {}).items() if not k.startswith("_")},
        "participants": [
            {
                "id": p.id,
                "email": p.email,
                "name": p.name,
                "roles": p.roles or [],
                "muted": p.muted_at is not None,
                **_bounces_json(p),
            }
            for p in conversation.participants
        ],
        "comments": [
            {
                "id": c.id,
                "author": c.participant.email if c.participant else None,
                "body": c.body,
                "inbound_id": c.inbound_id,
                "created_at": c.created_at.isoformat(),
            }
            for c in conversation.comments
        ],
    }


def _bounces_json(participant: Participant) -> dict[str, Any]:
    """Bounce state (mailbot/outbound/bounces.py), shown only for a participant who bounced: a hard
    bounce suspends sending to them, soft bounces are counted."""
    if participant.bounced_at is None and not participant.soft_bounces:
        return {}
    return {
        "suspended": participant.bounced_at is not None,
        "bounced_at": participant.bounced_at.isoformat() if participant.bounced_at else None,
        "bounce_reason": participant.bounce_reason,
        "soft_bounces": participant.soft_bounces,
    }
