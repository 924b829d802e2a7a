"""The inbox search box, in the style people know from Mailpit.

``from:alice to:help@ subject:"printer fire" status:rejected bot:comments
conversation:ticket-42 has:attachment before:2026-12-01 after:2026-11-01 toner``

Each term narrows the list (AND). Free words search the subject, the senders, the reply and
the whole parsed JSON. A term the parser does not know is searched as free text, never an
error: a search box should not scold. Values are compared as text with ``LIKE``, escaped, so
``%`` and ``_`` in a query mean themselves.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import String, and_, cast, exists, or_, select
from sqlalchemy.sql.elements import ColumnElement

from mailbot.store.models import Conversation, InboundAttachment, InboundMessage, InboundStatus

MAX_QUERY = 500
MAX_TERMS = 20
KEYS = ("from", "to", "subject", "status", "bot", "conversation", "has", "before", "after", "is")


@dataclass
class Query:
    """A parsed search: what each key asked for, and the free words."""

    terms: list[tuple[str, str]] = field(default_factory=list)
    words: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # shown beside the box, not raised


def parse_query(text: str) -> Query:
    query = Query()
    # Control characters never match anything stored, and PostgreSQL refuses a NUL outright.
    text = "".join(c if c.isprintable() or c == " " else " " for c in text[:MAX_QUERY])
    try:
        parts = shlex.split(text)
    except ValueError:  # an unclosed quote: read it as plain words
        parts = text.replace('"', " ").replace("'", " ").split()
    for part in parts[:MAX_TERMS]:
        key, colon, value = part.partition(":")
        key = key.lower()
        if colon and key in KEYS and value:
            query.terms.append((key, value))
        elif part:
            query.words.append(part)
    return query


def _like(value: str) -> str:
    escaped = value.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _text(column: Any) -> ColumnElement[str]:
    return cast(column, String)


def _contains(column: Any, value: str) -> ColumnElement[bool]:
    return _text(column).ilike(_like(value), escape="\\")


def _day(value: str) -> datetime | None:
    try:
        return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
    except ValueError:
        return None


def conditions(query: Query) -> list[ColumnElement[bool]]:
    """SQL conditions for ``query``; anything it could not use is added to its problems."""
    found: list[ColumnElement[bool]] = []
    for key, value in query.terms:
        condition = _condition(key, value)
        if condition is None:
            query.problems.append(f"{key}:{value} was not understood and is ignored")
        else:
            found.append(condition)
    for word in query.words:
        found.append(
            or_(
                _contains(InboundMessage.mail_from, word),
                _contains(InboundMessage.reply_text, word),
                _contains(InboundMessage.parsed, word),
            )
        )
    return found


def _condition(key: str, value: str) -> ColumnElement[bool] | None:
    if key == "from":
        return or_(
            _contains(InboundMessage.mail_from, value),
            _contains(InboundMessage.parsed["from"], value),
        )
    if key == "to":
        return or_(
            _contains(InboundMessage.rcpt_tos, value),
            _contains(InboundMessage.parsed["to"], value),
        )
    if key == "subject":
        return _contains(InboundMessage.parsed["subject"], value)
    if key in ("status", "is"):
        if value.lower() not in InboundStatus.__members__:
            return None
        return InboundMessage.status == InboundStatus(value.lower())
    if key == "bot":
        return InboundMessage.bot == value
    if key == "conversation":
        return InboundMessage.conversation_id.in_(
            select(Conversation.id).where(Conversation.key == value)
        )
    if key == "has":
        if value.lower() not in ("attachment", "attachments"):
            return None
        return exists().where(InboundAttachment.inbound_id == InboundMessage.id)
    day = _day(value)
    if day is None:
        return None
    if key == "before":
        return InboundMessage.received_at < day
    return InboundMessage.received_at >= day  # after:


def where(query: Query) -> ColumnElement[bool] | None:
    found = conditions(query)
    return and_(*found) if found else None
