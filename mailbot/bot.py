"""The Bot API: one class per mailbox, one ``process`` method.

A bot receives mail that has already been stored, parsed, checked, matched to a conversation
and stripped to its reply text. It acts through its context: post a comment, send mail to
participants. Everything it does is committed in one transaction with the message's status,
so a bot that raises leaves nothing half-done behind.

Example, a bot that echoes every reply back to its author::

    from mailbot import Bot, InboundMail

    class EchoBot(Bot):
        name = "echo"

        async def before_process(self, mail: InboundMail) -> None:
            if not mail.reply:
                self.bounce("nothing to echo")  # status ``bounced``, with this reason

        async def process(self, mail: InboundMail) -> None:
            await self.ctx.send(mail.participant, subject=f"Re: {mail.subject}", body=mail.reply,
                                in_reply_to=mail)

Lifecycle of the message around it: ``processing`` → ``delivered`` when ``process`` returns,
``bounced`` when a hook calls :meth:`Bot.bounce`, ``failed`` (after retries) when it raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NoReturn

from sqlalchemy.ext.asyncio import AsyncSession

from mailbot.config import Settings
from mailbot.errors import Bounce
from mailbot.outbound import outbox as outbound
from mailbot.parse import ParsedMail
from mailbot.status import RefusalCode
from mailbot.store.conversations import display_name
from mailbot.store.models import Comment, Conversation, OutboundMessage, Participant


@dataclass
class InboundMail:
    """A received message as a bot sees it."""

    id: int
    parsed: ParsedMail
    reply: str  # the new text: no quoted history, no signature
    signature: str | None
    quote: str | None
    mail_from: str  # the envelope sender ("" for the null sender)
    rcpt_tos: list[str]
    conversation: Conversation | None
    participant: Participant | None

    @property
    def subject(self) -> str:
        return self.parsed.subject

    @property
    def sender(self) -> str | None:
        return self.parsed.sender

    @property
    def message_id(self) -> str | None:
        return self.parsed.message_id


@dataclass
class Context:
    """What a bot may touch: the open transaction, the settings, and the outcome record."""

    session: AsyncSession
    settings: Settings
    outcome: dict[str, Any] = field(default_factory=dict)

    async def comment(self, mail: InboundMail, body: str | None = None) -> Comment:
        """Post ``body`` (default: the reply text) as the sender's comment on the conversation."""
        if mail.conversation is None:
            raise ValueError("this mail matched no conversation, so it cannot be a comment")
        comment = Comment(
            conversation_id=mail.conversation.id,
            participant=mail.participant,
            inbound_id=mail.id,
            body=mail.reply if body is None else body,
        )
        self.session.add(comment)
        await self.session.flush()
        self.outcome.setdefault("comments", []).append(comment.id)
        return comment

    async def send(
        self,
        to: Participant,
        *,
        subject: str,
        body: str,
        in_reply_to: InboundMail | None = None,
        author: Participant | None = None,
        conversation: Conversation | None = None,
    ) -> OutboundMessage:
        """Queue a mail to one participant, with their own reply address and threading headers."""
        convo = conversation or (in_reply_to.conversation if in_reply_to else None)
        if convo is None:
            raise ValueError("send() needs a conversation, or a mail that belongs to one")
        row = await outbound.queue(
            self.session,
            self.settings,
            conversation=convo,
            to=to,
            subject=subject,
            body=body,
            author_name=display_name(author) if author else None,
            in_reply_to=in_reply_to.message_id if in_reply_to else None,
            inbound_id=in_reply_to.id if in_reply_to else None,
        )
        self.outcome.setdefault("sent_to", []).append(to.email)
        return row


SenderPolicy = Literal["strict", "standard", "open"]


class Bot:
    """Base class of every bot. Subclasses set ``name`` and implement :meth:`process`.

    ``sender_policy`` says who may act through this bot's addresses (see
    :mod:`mailbot.trust.authorize`): ``"standard"`` (the participant's From, DMARC not failed),
    ``"strict"`` (and DMARC or aligned DKIM passed), or ``"open"`` (anyone: a help desk).
    """

    name: ClassVar[str] = ""
    sender_policy: ClassVar[SenderPolicy] = "standard"
    # Spam policy for mail this bot gets; None keeps the node's MAILBOT_SPAM_* setting. A help
    # desk open to anyone may be stricter than replies from known participants, e.g.
    # ``spam_quarantine_score = 3.0`` (see mailbot/spam/policy.py).
    spam_quarantine_score: ClassVar[float | None] = None
    spam_reject_score: ClassVar[float | None] = None
    # A reply with nothing left after stripping quotes and signature is refused (empty_reply)
    # unless the bot wants it anyway: one that acts on attachments or on the subject alone.
    accepts_empty: ClassVar[bool] = False

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.name:
            raise TypeError(f"{cls.__qualname__} must set a class attribute `name`")

    async def before_process(self, mail: InboundMail) -> None:
        """Preconditions; call :meth:`bounce` to refuse the mail. Runs before ``process``."""

    async def process(self, mail: InboundMail) -> None:
        raise NotImplementedError

    def bounce(self, reason: str) -> NoReturn:
        """Refuse this mail: status ``bounced``, ``reason`` stored; ``process`` does not run."""
        raise Bounce(reason, code=RefusalCode.bounced_by_bot)
