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

Commands: a method marked ``@command`` is run for each ``/name`` line of a reply (see
:mod:`mailbot.commands`), before ``process``; the sender gets one answer saying what became
of each. ``mail.reply`` is the text with those lines lifted out; a reply that held only
commands does not reach ``process`` (it makes no comment).

Lifecycle of the message around it: ``processing`` → ``delivered`` when ``process`` returns,
``bounced`` when a hook calls :meth:`Bot.bounce`, ``failed`` (after retries) when it raises.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NoReturn

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot.commands.declare import Command, commands_of
from mailbot.commands.find import Invocation
from mailbot.config import Settings
from mailbot.errors import Bounce
from mailbot.outbound import outbox as outbound
from mailbot.outbound.rendering import OutgoingFile, html_alternative, total_size
from mailbot.parse import ParsedMail
from mailbot.status import RefusalCode
from mailbot.store import conversations
from mailbot.store.attachments import MailAttachment as MailAttachment  # re-exported
from mailbot.store.conversations import display_name
from mailbot.store.models import Comment, Conversation, OutboundMessage, Participant, utcnow

if TYPE_CHECKING:
    from mailbot.routing import Matcher
    from mailbot.trust.authenticate import Authentication


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
    # The commands found in the person's own text (lifted out of ``reply``), in order.
    commands: tuple[Invocation, ...] = ()
    # How it matched: "token" (a participant's own reply address, a credential), "references"
    # (it answers a mail we sent) or "route" (an address of the routing table).
    via: str | None = None
    authentication: Authentication | None = None  # SPF, DKIM, DMARC, SMTP AUTH
    spam: dict[str, Any] | None = None  # spamd's verdict, when mail is scanned
    attachments: tuple[MailAttachment, ...] = ()

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
    conversation: Conversation | None = None
    state_if_loaded: dict[str, Any] | None = field(default=None, repr=False)
    bot_name: str = ""  # the bot this context serves: its new conversations are its own
    # The bot's ``[bots.<name>] settings`` from the settings file (mailbot/app.py).
    bot_settings: dict[str, Any] = field(default_factory=dict)

    async def open_conversation(
        self, key: str, *, subject: str = "", exists_ok: bool = True
    ) -> Conversation:
        """The conversation with this key (the app's id for it, ``ticket-42``), made for this
        bot if new; if the mail has none yet, it becomes the mail's (``state`` is its state).
        Raises ValueError for a key that cannot be one, or that is taken and not
        ``exists_ok``."""
        if not exists_ok and await conversations.get(self.session, key) is not None:
            raise ValueError(f"a conversation {key!r} exists")
        convo = await conversations.ensure(
            self.session, key, self.settings.domain, subject=subject, bot=self.bot_name
        )
        if self.conversation is None:
            self.conversation = convo
        return convo

    async def add_participant(
        self,
        conversation: Conversation,
        email: str,
        name: str = "",
        *,
        roles: Iterable[str] | None = None,
    ) -> Participant:
        """The participant with this address, added if new (``roles`` replace theirs when
        given). Raises ValueError for anything but exactly one valid address."""
        return await conversations.ensure_participant(
            self.session, conversation, email, name, roles
        )

    async def count_conversations(self) -> int:
        """How many conversations this bot has (the next ticket's number is one more)."""
        query = select(func.count()).select_from(Conversation)
        return await self.session.scalar(query.where(Conversation.bot == self.bot_name)) or 0

    @property
    def state(self) -> dict[str, Any]:
        """The bot's state for this conversation: a JSON-able dict, saved with the bot's
        other writes (all or nothing). Keys starting with ``_`` are mailbot's own."""
        if self.conversation is None:
            raise ValueError("this mail matched no conversation, so it has no state")
        if self.state_if_loaded is None:
            self.state_if_loaded = copy.deepcopy(self.conversation.state or {})
        return self.state_if_loaded

    def save_state(self) -> None:
        """Write the state back if it changed (the pipeline calls this after ``process``)."""
        if self.conversation is None or self.state_if_loaded is None:
            return
        if self.state_if_loaded != (self.conversation.state or {}):
            self.conversation.state = copy.deepcopy(self.state_if_loaded)

    async def comment(
        self,
        mail: InboundMail,
        body: str | None = None,
        *,
        conversation: Conversation | None = None,
        author: Participant | None = None,
    ) -> Comment:
        """Post ``body`` (default: the reply text) as the sender's comment on the mail's
        conversation (or on ``conversation``, by ``author``: a conversation the bot opened)."""
        convo = conversation or mail.conversation
        if convo is None:
            raise ValueError("this mail matched no conversation, so it cannot be a comment")
        comment = Comment(
            conversation_id=convo.id,
            participant=author or mail.participant,
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
        markdown: bool = False,
        files: Sequence[OutgoingFile] = (),
    ) -> OutboundMessage:
        """Queue a mail to one participant, with their own reply address and threading headers:
        an answer (auto-replied) when it answers their own mail, else a notification (not
        sent to someone who unsubscribed from the conversation). ``markdown``: ``body`` is
        Markdown, sent as it is and as an HTML alternative (plain text only past 32 KiB);
        ``files`` are attached (:class:`OutgoingFile`)."""
        html = await html_alternative(body) if markdown else None
        return await self._send(to, subject, body, in_reply_to, author, conversation, html, files)

    async def _send(
        self,
        to: Participant,
        subject: str,
        body: str,
        in_reply_to: InboundMail | None,
        author: Participant | None,
        conversation: Conversation | None,
        html: str | None,
        files: Sequence[OutgoingFile],
    ) -> OutboundMessage:
        convo = conversation or (in_reply_to.conversation if in_reply_to else None)
        if convo is None:
            raise ValueError("send() needs a conversation, or a mail that belongs to one")
        if total_size(files) > self.settings.max_message_size:
            raise ValueError(f"files over max_message_size ({self.settings.max_message_size})")
        # An answer to this person's own mail goes whatever they chose (it is not a
        # subscription); anything else is a notification, which /unsubscribe stops.
        asker = in_reply_to.participant if in_reply_to is not None else None
        answer = asker is not None and asker.id == to.id
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
            kind="answer" if answer else "notification",
            html=html,
            files=files,
        )
        self.outcome.setdefault("sent_to", []).append(to.email)
        return row

    async def reply(
        self,
        mail: InboundMail,
        body: str,
        *,
        subject: str | None = None,
        markdown: bool = False,
        files: Sequence[OutgoingFile] = (),
    ) -> OutboundMessage:
        """Answer the sender of ``mail``, threaded under it (subject ``Re: <theirs>`` unless
        given); as :meth:`send`. Raises ValueError for mail from no participant."""
        if mail.participant is None:
            raise ValueError("this mail is from no participant, so there is no one to answer")
        if subject is None:
            subject = (
                mail.subject if mail.subject.lower().startswith("re:") else f"Re: {mail.subject}"
            )
        return await self.send(
            mail.participant,
            subject=subject,
            body=body,
            in_reply_to=mail,
            markdown=markdown,
            files=files,
        )

    def mute(self, participant: Participant, *, muted: bool = True) -> None:
        """Stop (or, with ``muted=False``, restart) :meth:`notify`'s mail to ``participant``
        in their conversation; mail sent to them with :meth:`send` still goes."""
        if not muted:
            participant.muted_at = None
        elif participant.muted_at is None:
            participant.muted_at = utcnow()

    async def notify(
        self,
        participants: Iterable[Participant],
        *,
        subject: str,
        body: str,
        in_reply_to: InboundMail | None = None,
        author: Participant | None = None,
        conversation: Conversation | None = None,
        markdown: bool = False,
        files: Sequence[OutgoingFile] = (),
    ) -> list[OutboundMessage]:
        """Queue one mail to each of ``participants``, each with their own reply address, but
        none to ``author`` (they wrote it) nor to whoever muted the conversation; ``markdown``
        and ``files`` as for :meth:`send` (the Markdown rendered once for all)."""
        html = await html_alternative(body) if markdown else None
        sent = []
        for person in participants:
            if person.muted_at is not None or (author is not None and person.id == author.id):
                continue
            sent.append(
                await self._send(
                    person, subject, body, in_reply_to, author, conversation, html, files
                )
            )
        return sent


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
    # How commands are written to this bot: "slash", ``/close`` lines in a reply; "lines",
    # a command mail (debbugs' control@): plain lines from the top, until "thanks" or "--";
    # None: no commands at all (not even /help: a bot that never writes back).
    command_style: ClassVar[Literal["slash", "lines"] | None] = "slash"
    # Temporary addresses ``<token>@<subdomain>.<domain>`` (the inspector's "inspect"): each
    # a conversation of this bot, made by mailbot.store.temporary; None: none.
    subdomain: ClassVar[str | None] = None
    # A conversation with too many replies too fast is paused (pipeline/loops.py); a bot
    # that never answers cannot loop, and may turn it off.
    loop_guard: ClassVar[bool] = True
    # Mail with an attachment larger than this is bounced (None: the node's limits only).
    max_attachment_bytes: ClassVar[int | None] = None
    commands: ClassVar[dict[str, Command]] = {}  # filled from the @command methods
    # Routes of a bot found in ``bots/`` or installed as a package (mailbot/app.py),
    # unless the settings file's ``[bots.<name>] addresses`` says otherwise: local parts
    # (``"support"``), whole addresses or compiled patterns. A bot of the app is routed by it.
    addresses: ClassVar[tuple[Matcher, ...]] = ()
    # The shape of the bot's ``[bots.<name>] settings`` (a pydantic model), checked at
    # start; ``self.ctx.bot_settings`` is then the model's dump, defaults filled in.
    settings_model: ClassVar[type[BaseModel] | None] = None

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.name:
            raise TypeError(f"{cls.__qualname__} must set a class attribute `name`")
        cls.commands = commands_of(cls)

    def roles_of(self, participant: Participant) -> set[str]:
        """The roles ``participant`` holds, for commands declared ``who="<role>"``: by
        default the participant's stored ``roles``."""
        return {str(role) for role in participant.roles or ()}

    async def before_process(self, mail: InboundMail) -> None:
        """Preconditions; call :meth:`bounce` to refuse the mail. Runs before ``process``."""

    async def process(self, mail: InboundMail) -> None:
        raise NotImplementedError

    async def after_process(self, mail: InboundMail) -> None:
        """Runs last, in the same transaction: after the commands and ``process`` (also when
        a reply of commands only skipped ``process``). Where to tell people what changed."""

    def bounce(self, reason: str) -> NoReturn:
        """Refuse this mail: status ``bounced``, ``reason`` stored; ``process`` does not run."""
        raise Bounce(reason, code=RefusalCode.bounced_by_bot)
