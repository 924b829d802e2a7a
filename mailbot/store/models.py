"""The stored records, as typed SQLAlchemy 2 models.

The inbound row is the single source of truth for a received message: its raw bytes and
envelope are written before the SMTP server says 250, and everything else on it (parsed JSON,
reply text, outcome) is derived and can be derived again (reprocess = back to ``pending``).

The inbound and outbound lifecycles, and the status enums, are in :mod:`mailbot.status`
(re-exported here).

Where reply tokens are, exactly (a reply address is a credential; mailbot/redact.py):

- ``reply_tokens`` holds only each token's SHA-256, never the token.
- An outbound row that is not yet delivered (``held``, ``queued``) holds its recipient's live
  reply address in ``reply_to`` and in the Reply-To of ``raw``: it must be sent as written.
  When it becomes ``sent`` or ``failed``, both are rewritten with the token's fingerprint
  in the same update (mailbot/outbound/record.py); a row stored ``failed`` from the start (the
  throttle refused it) within the hour, by a sweep. A mail someone wrote may quote an address
  in its body, in an encoding that hides it; that copy is not rewritten.
- An inbound row holds, in ``raw``, ``rcpt_tos`` and ``parsed``, the reply address it was
  sent to (and any a person pasted into the text): it is the mail as received.
- ``bounces+<id>`` return paths (``outbound_messages.mail_from``) stay, so that bounces find
  the mail they are about; they are a recipient address, not a way to post.

So a leaked database leaks the tokens of undelivered mail and of received mail. The API and
the CLI never show a live token or return path, only a fingerprint.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Re-exported: the statuses used to live here, and tests and tools import them from here.
from mailbot.status import FINAL_INBOUND as FINAL_INBOUND
from mailbot.status import IN_FLIGHT_INBOUND as IN_FLIGHT_INBOUND
from mailbot.status import InboundStatus as InboundStatus
from mailbot.status import OutboundStatus as OutboundStatus
from mailbot.status import WebhookStatus as WebhookStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware everywhere; SQLite stores naive values, so they are read back as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: use mailbot.store.models.utcnow()")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class CleanText(TypeDecorator[str]):
    """Text that PostgreSQL can store whatever a sender wrote: a NUL (which no PostgreSQL
    text value may hold) becomes U+FFFD, and so does a lone surrogate (not UTF-8)."""

    impl: type[String] = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        if value is None:
            return None
        value = value.replace("\x00", "\ufffd")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
        return value


class CleanString(CleanText):
    """A bounded :class:`CleanText` (``VARCHAR(n)``); longer text is cut to fit, where
    PostgreSQL would refuse the whole row."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        value = super().process_bind_param(value, dialect)
        length = getattr(self.impl_instance, "length", None)
        return value[:length] if value is not None and length else value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(CleanString(200), unique=True)
    subject: Mapped[str] = mapped_column(CleanText(), default="")
    bot: Mapped[str] = mapped_column(CleanString(100), default="comments")
    # Message-ID of the first notification: the root of every References chain we write.
    root_message_id: Mapped[str | None] = mapped_column(CleanString(998))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The bot's own per-conversation state (JSON), saved with the bot's writes (mailbot/bot.py).
    state: Mapped[dict[str, Any] | None]

    participants: Mapped[list[Participant]] = relationship(
        back_populates="conversation", order_by="Participant.id"
    )
    comments: Mapped[list[Comment]] = relationship(
        back_populates="conversation", order_by="Comment.id"
    )


class Participant(Base):
    __tablename__ = "participants"
    __table_args__ = (UniqueConstraint("conversation_id", "email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"))
    email: Mapped[str] = mapped_column(CleanString(320))  # stored lower-cased
    name: Mapped[str] = mapped_column(CleanString(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Bounces (mailbot/outbound/bounces.py): a hard bounce suspends sending to this participant.
    bounced_at: Mapped[datetime | None]
    bounce_reason: Mapped[str | None] = mapped_column(CleanText())
    soft_bounces: Mapped[int] = mapped_column(default=0, server_default="0")
    # Named roles a bot's commands may require (``@command(who="maintainer")``).
    roles: Mapped[list[Any] | None]
    # Set by /unsubscribe: no notifications (Context.notify) in this conversation.
    muted_at: Mapped[datetime | None]

    conversation: Mapped[Conversation] = relationship(back_populates="participants")


class ReplyToken(Base):
    """A reply address's secret, stored as its SHA-256 only. Other tables do hold reply
    addresses (undelivered outbound mail, received mail): see the module docstring."""

    __tablename__ = "reply_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(CleanString(64), unique=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]

    participant: Mapped[Participant] = relationship()


class InboundMessage(Base):
    __tablename__ = "inbound_messages"
    __table_args__ = (
        Index("ix_inbound_status_next", "status", "next_attempt_at"),
        Index("ix_inbound_purge", "purged_at", "received_at"),  # what retention looks for
        Index("ix_inbound_updated_at", "updated_at"),  # what the live inbox asks for
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[InboundStatus] = mapped_column(
        Enum(InboundStatus, native_enum=False, length=20), default=InboundStatus.pending
    )
    reason: Mapped[str | None] = mapped_column(CleanText())
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # The envelope, as the SMTP session saw it.
    mail_from: Mapped[str] = mapped_column(CleanString(998), default="")
    rcpt_tos: Mapped[list[Any]] = mapped_column(default=list)
    client_ip: Mapped[str | None] = mapped_column(CleanString(64))
    helo: Mapped[str | None] = mapped_column(CleanString(255))
    tls: Mapped[bool] = mapped_column(default=False)
    auth_user: Mapped[str | None] = mapped_column(CleanString(255))
    size: Mapped[int] = mapped_column(Integer, default=0)
    raw: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    raw_sha256: Mapped[str] = mapped_column(CleanString(64), index=True)
    # A raw message of blob_threshold bytes or more is in the blob store under this key
    # (mailbot/store/blobs.py), and ``raw`` is empty.
    raw_blob: Mapped[str | None] = mapped_column(String(64), index=True)
    # When retention removed the raw message and the attachments' bytes (``raw`` empty,
    # ``raw_blob`` None; mailbot/store/retention.py). The parsed text and comments stay.
    purged_at: Mapped[datetime | None]
    message_id: Mapped[str | None] = mapped_column(CleanString(998), index=True)
    # Derived by the pipeline.
    parsed: Mapped[dict[str, Any] | None]
    reply_text: Mapped[str | None] = mapped_column(CleanText())
    signature: Mapped[str | None] = mapped_column(CleanText())
    quote: Mapped[str | None] = mapped_column(CleanText())
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"))
    participant_id: Mapped[int | None] = mapped_column(ForeignKey("participants.id"))
    bot: Mapped[str | None] = mapped_column(CleanString(100))
    outcome: Mapped[dict[str, Any] | None]
    # spamd's verdict (score, threshold, rules) or why there is none (mailbot/spam/policy.py).
    spam: Mapped[dict[str, Any] | None]
    # SPF, DKIM, DMARC and the Authentication-Results header (mailbot/trust/authenticate.py).
    authentication: Mapped[dict[str, Any] | None]
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]

    conversation: Mapped[Conversation | None] = relationship()
    participant: Mapped[Participant | None] = relationship()


class InboundAttachment(Base):
    """One attachment of an inbound message, as parse() lists them; its decoded bytes are in
    the blob store (mailbot/store/blobs.py), written by the analyser before this row commits."""

    __tablename__ = "attachments"
    __table_args__ = (UniqueConstraint("inbound_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # A deleted message (quarantine delete) takes its rows along; its blobs are collected.
    inbound_id: Mapped[int] = mapped_column(ForeignKey("inbound_messages.id", ondelete="CASCADE"))
    position: Mapped[int]  # from 0, in the order of the parsed JSON's attachments
    # Cleaned (mailbot/store/attachments.py clean_filename): one line, no path, no controls.
    filename: Mapped[str | None] = mapped_column(CleanString(255))
    content_type: Mapped[str] = mapped_column(CleanString(255))
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    # None: the bytes were removed by retention.
    blob_key: Mapped[str | None] = mapped_column(String(64), index=True)


class Comment(Base):
    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    participant_id: Mapped[int | None] = mapped_column(ForeignKey("participants.id"))
    # One comment per inbound message at most: re-running a message never posts twice.
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id"), unique=True)
    body: Mapped[str] = mapped_column(CleanText())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    conversation: Mapped[Conversation] = relationship(back_populates="comments")
    participant: Mapped[Participant | None] = relationship()


class OutboundMessage(Base):
    __tablename__ = "outbound_messages"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[OutboundStatus] = mapped_column(
        Enum(OutboundStatus, native_enum=False, length=20)
    )
    reason: Mapped[str | None] = mapped_column(CleanText())
    message_id: Mapped[str] = mapped_column(CleanString(998), unique=True)
    mail_from: Mapped[str] = mapped_column(CleanString(998))  # the envelope sender (return path)
    recipient: Mapped[str] = mapped_column(CleanString(320))
    # the recipient's reply address
    reply_to: Mapped[str | None] = mapped_column(CleanString(998))
    # "notification" (a bot's mail; /unsubscribe stops it), "answer" (a bot's answer to the
    # person's own mail), "transcript" (what became of their commands: mailbot/commands/run.py)
    # or "notice" (why a message was refused: mailbot/outbound/notices.py)
    kind: Mapped[str] = mapped_column(
        String(20), default="notification", server_default="notification"
    )
    subject: Mapped[str] = mapped_column(CleanText(), default="")
    raw: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"))
    participant_id: Mapped[int | None] = mapped_column(ForeignKey("participants.id"))
    # The inbound message that caused this one, if any (a comment fanned out to the others).
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id"))
    attempts: Mapped[int] = mapped_column(default=0)
    # queued/deferred: when to try; sending: when the sender's lease runs out.
    next_attempt_at: Mapped[datetime | None]
    # A mail refused for now is tried until then (None, rows older than 0008: created_at plus
    # delivery_lifetime_hours); an operator's retry starts a new lifetime.
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_outbound_status_next", "status", "next_attempt_at"),
        # The per-address send limit (outbound/throttle.py) and "is this our return path"
        # (recipients.py, at RCPT) compare case-folded: indexed, they stay one lookup
        # however large the outbox grows.
        Index("ix_outbound_recipient_lower", func.lower(recipient), "created_at"),
        Index("ix_outbound_mail_from_lower", func.lower(mail_from)),
        # The mails sent to one participant (mailbot/pipeline/sent.py, for every reply).
        Index("ix_outbound_participant", "participant_id", "id"),
    )


class WebhookDelivery(Base):
    """One event for one webhook URL, queued in the transaction that caused it (so an event
    is never lost, nor told of something that rolled back), then POSTed until it is taken
    (mailbot/outbound/webhooks.py)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_status_next", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(2000))
    inbound_id: Mapped[int | None] = mapped_column(
        ForeignKey("inbound_messages.id", ondelete="SET NULL"), index=True
    )
    payload: Mapped[dict[str, Any]]
    status: Mapped[WebhookStatus] = mapped_column(
        Enum(WebhookStatus, native_enum=False, length=16), default=WebhookStatus.queued
    )
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    last_answer: Mapped[str | None] = mapped_column(CleanText())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class ApiToken(Base):
    """A credential for the HTTP side (``mailbot api-token create``), stored as its SHA-256
    only: the token itself is shown once, when made."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(CleanString(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
