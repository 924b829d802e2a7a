"""The shapes of the API's JSON answers, as pydantic models, so ``/openapi.json`` describes
what each route returns (an app's client can be generated from it).

The views (mailbot/web/views.py) build plain dicts, one shape shared with the CLI's
``--json``; these models describe those dicts, they do not make them. Each allows fields it
does not name (``extra="allow"``), so a field a view adds before its model learns of it is
passed on, never a server error; and a field a view may leave out has a default.
tests/test_web_api.py checks every route's answer against its model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Shape(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Health(Shape):
    status: str
    domain: str
    relay: str
    spam_scanning: str


class Live(Shape):
    status: str
    uptime_seconds: float


class Ready(Shape):
    status: str
    backlog: int


class Envelope(Shape):
    mail_from: str | None = None
    rcpt_tos: list[str] = []
    client_ip: str | None = None
    helo: str | None = None
    tls: bool | None = None
    auth_user: str | None = None
    size: int | None = None


class Kept(Shape):
    kept: str | None = Field(description="'database' or 'blob store'; null once removed")
    removed: str | None = None
    at: str | None = None


class Attachment(Shape):
    n: int
    filename: str | None = None
    content_type: str
    size: int
    sha256: str | None = None
    url: str = Field(description="where to download it")
    removed: str | None = Field(None, description="set when retention removed it")


class Message(Shape):
    """One inbound message as lists show it (GET /api/messages, the live inbox)."""

    id: int
    status: str
    reason: str | None = None
    received_at: str
    updated_at: str
    envelope: Envelope
    message_id: str | None = None
    from_: list[Any] = Field([], alias="from", description="the parsed From addresses")
    subject: str | None = None
    reply_text: str | None = Field(None, description="the reply, quote and signature cut")
    signature: str | None = None
    quote: str | None = None
    conversation: str | None = Field(None, description="the conversation's key")
    bot: str | None = None
    outcome: dict[str, Any] | None = Field(None, description="what the bot did, and the stages")
    spam: dict[str, Any] = Field(description="spamd's verdict, or why there is none")
    authentication: dict[str, Any] | None = Field(None, description="SPF, DKIM, DMARC")
    attempts: int = 0
    raw: Kept


class MessageDetail(Message):
    """One message with its parsed JSON and its attachments (GET /api/messages/{id})."""

    parsed: dict[str, Any] | None = Field(None, description="the whole parsed message")
    attachments: list[Attachment] = []


class Step(Shape):
    stage: str
    at: str | None = None
    result: str | None = None
    ms: float | None = Field(None, description="how long the stage took")
    sent_at: str | None = None
    outbound_id: int | None = None
    webhook_id: int | None = None


class Timeline(Shape):
    id: int
    status: str
    steps: list[Step] = Field(description="received, each pipeline stage, each mail sent")


class TokenUse(Shape):
    fingerprint: str
    participant_id: int | None = None
    expires_at: str | None = None
    revoked: bool | None = None


class Outbound(Shape):
    id: int
    status: str
    reason: str | None = None
    message_id: str | None = None
    mail_from: str | None = None
    recipient: str
    kind: str
    reply_to: str | None = Field(None, description="redacted: the token's fingerprint only")
    reply_token: TokenUse | None = None
    subject: str | None = None
    attempts: int = 0
    next_attempt_at: str | None = None
    expires_at: str | None = None
    inbound_id: int | None = None
    created_at: str
    sent_at: str | None = None


class ConversationListed(Shape):
    id: int
    key: str
    subject: str | None = None
    bot: str | None = None
    created_at: str
    participants: int
    comments: int
    last_comment_at: str | None = None


class Token(Shape):
    id: int
    fingerprint: str
    created_at: str
    expires_at: str
    revoked_at: str | None = None
    live: bool


class Participant(Shape):
    id: int
    email: str
    name: str | None = None
    roles: list[str] = []
    muted: bool = False
    suspended: bool | None = Field(None, description="set only for one who bounced")
    bounced_at: str | None = None
    bounce_reason: str | None = None
    tokens: list[Token] = []


class CommentShape(Shape):
    id: int
    author: str | None = None
    body: str
    inbound_id: int | None = None
    created_at: str
    attachments: list[Any] = []


class Conversation(Shape):
    key: str
    subject: str | None = None
    bot: str | None = None
    created_at: str
    state: dict[str, Any] = {}
    participants: list[Participant] = []
    comments: list[CommentShape] = []


class Added(Shape):
    id: int
    email: str
    name: str | None = None
    roles: list[str] = []


class Deleted(Shape):
    deleted: int


class Learned(Shape):
    id: int
    as_: str = Field(alias="as", description="spam or ham")
    at: str
    new_to_spamd: bool | None = None


class Hour(Shape):
    hour: str
    by_status: dict[str, int]
    scanned: int
    spam: int
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    spam_rate: float | None = None


class Stats(Shape):
    hours: list[Hour]
    cut: bool = Field(False, description="more mail than one answer counts: the oldest left out")


class Session(Shape):
    logged_in: bool
