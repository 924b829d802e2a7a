"""Running a mail's commands in the bot's transaction, and telling the sender what became
of each, in one answer.

Each command is checked (who may use it), its arguments read, and run in a savepoint of the
bot's transaction: a command that refuses (:class:`CommandError`) leaves nothing behind,
one that fails otherwise fails the whole mail (retried; nothing of it kept). A command
declared with ``confirm=True`` only asks: the answer carries a code, and ``/confirm CODE``
from the same participant within a day runs it. ``help`` lists what this sender may use.
"""

from __future__ import annotations

import copy
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot import headers
from mailbot.commands import find as finding
from mailbot.commands.declare import (
    ANYONE,
    BUILTIN,
    PARTICIPANT,
    VERIFIED,
    Command,
    CommandError,
    read_args,
)
from mailbot.outbound import outbox
from mailbot.store.conversations import title
from mailbot.store.models import utcnow

if TYPE_CHECKING:
    from mailbot.bot import Bot, InboundMail

PENDING = "_pending_commands"  # the conversation state's key for commands to confirm
CONFIRM_FOR = timedelta(days=1)
MAX_PENDING = 20
KIND = "transcript"
WORDS = {"done": "done", "refused": "refused", "unknown": "unknown command", "asked": "to confirm"}


@dataclass(frozen=True)
class Result:
    line: str  # the command as written
    status: str  # done | refused | unknown | asked
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def find(bot: type[Bot], reply: str, signature: str | None = None) -> finding.Found:
    """The commands in a mail's own text, and the text left without them."""
    known = {*bot.commands, *BUILTIN}
    if bot.command_style is None:
        return finding.Found((), reply)
    if bot.command_style == "lines":
        return finding.in_command_mail(reply, known)
    atop = finding.commands_atop(signature, known)
    return finding.in_reply(f"{reply}\n{atop}" if atop else reply, known)


async def run(bot: Bot, mail: InboundMail) -> list[Result]:
    return [await _one(bot, mail, invocation) for invocation in mail.commands]


async def _one(bot: Bot, mail: InboundMail, invocation: finding.Invocation) -> Result:
    line = invocation.line
    if invocation.name == "help":
        return Result(line, "done", help_text(bot, mail))
    if invocation.name == "confirm":
        return await _confirm(bot, mail, invocation)
    cmd = bot.commands.get(invocation.name)
    if cmd is None:
        return Result(line, "unknown")
    if (why := refusal(bot, mail, cmd)) is not None:
        return Result(line, "refused", why)
    try:
        args = read_args(cmd, invocation.args, _people(mail))
    except CommandError as bad:
        return Result(line, "refused", f"{bad}; usage: {cmd.usage}")
    if cmd.confirm:
        return _ask(bot, mail, cmd, line)
    return await _invoke(bot, mail, cmd, args, line)


def refusal(bot: Bot, mail: InboundMail, cmd: Command) -> str | None:
    """Why this sender may not use ``cmd``, or None."""
    if cmd.who == ANYONE:
        return None
    if mail.participant is None:
        return f"only participants of a conversation may use /{cmd.name}"
    if cmd.who == PARTICIPANT:
        return None
    if cmd.who == VERIFIED:
        proof = mail.authentication
        if proof is not None and (proof.dmarc == "pass" or proof.smtp_auth):
            return None
        return (
            f"only senders whose mail passed DMARC, or who logged in over SMTP, may use /{cmd.name}"
        )
    if cmd.who in bot.roles_of(mail.participant):
        return None
    return f"only participants with the role {cmd.who!r} may use /{cmd.name}"


def help_text(bot: Bot, mail: InboundMail) -> str:
    usable = [c for c in bot.commands.values() if refusal(bot, mail, c) is None]
    rows = [(c.usage, c.help) for c in sorted(usable, key=lambda c: c.name)]
    rows.append(("/help", "this list"))
    width = max(len(usage) for usage, _ in rows)
    return "\n".join(f"{usage.ljust(width)}  {words}".rstrip() for usage, words in rows)


async def _invoke(bot: Bot, mail: InboundMail, cmd: Command, args: list[Any], line: str) -> Result:
    ctx = bot.ctx
    before = (copy.deepcopy(ctx.state_if_loaded), copy.deepcopy(ctx.outcome), ctx.conversation)
    try:
        async with ctx.session.begin_nested():
            said = await getattr(bot, cmd.method)(mail, *args)
    except CommandError as refused:
        # A refused command leaves everything as it found it: its rows are rolled back with
        # the savepoint, and what it changed in memory is put back here.
        ctx.state_if_loaded, ctx.outcome, ctx.conversation = before
        await reload(ctx.session, mail.conversation, mail.participant)
        return Result(line, "refused", str(refused))
    return Result(line, "done", "" if said is None else str(said))


async def reload(session: AsyncSession, conversation: Any, participant: Any) -> None:
    """After a savepoint rolled back, the objects it changed are expired (SQLAlchemy), and in
    async code an expired attribute cannot load itself: read them again, now."""
    for thing in (participant, conversation):
        if thing is not None and thing in session and sa_inspect(thing).expired_attributes:
            await session.refresh(thing)
    if conversation is not None and conversation in session:
        await session.refresh(conversation, ["participants"])


def _ask(bot: Bot, mail: InboundMail, cmd: Command, line: str) -> Result:
    if mail.conversation is None or mail.participant is None:
        return Result(line, "refused", f"/{cmd.name} must be confirmed, and only in a conversation")
    now = utcnow()
    waiting = {
        code: entry
        for code, entry in dict(bot.ctx.state.get(PENDING) or {}).items()
        if datetime.fromisoformat(entry["until"]) > now
    }
    code = secrets.token_hex(3)
    until = (now + CONFIRM_FOR).isoformat()
    waiting[code] = {"line": line, "by": mail.participant.id, "until": until}
    bot.ctx.state[PENDING] = dict(list(waiting.items())[-MAX_PENDING:])
    return Result(line, "asked", f"reply with /confirm {code} within a day to go ahead")


async def _confirm(bot: Bot, mail: InboundMail, invocation: finding.Invocation) -> Result:
    line = invocation.line
    waiting = dict(bot.ctx.state.get(PENDING) or {}) if mail.conversation else {}
    entry = waiting.get(invocation.args.strip().lower())
    if (
        entry is None
        or mail.participant is None
        or entry["by"] != mail.participant.id
        or datetime.fromisoformat(entry["until"]) <= utcnow()
    ):
        return Result(line, "refused", "no command of yours waits for that code")
    del waiting[invocation.args.strip().lower()]
    bot.ctx.state[PENDING] = waiting
    again = finding.in_command_mail(entry["line"], bot.commands).commands
    cmd = bot.commands.get(again[0].name) if again else None
    if cmd is None:
        return Result(line, "refused", "that command is no longer known here")
    if (why := refusal(bot, mail, cmd)) is not None:  # roles may have changed meanwhile
        return Result(line, "refused", why)
    try:
        args = read_args(cmd, again[0].args, _people(mail))
    except CommandError as bad:
        return Result(line, "refused", str(bad))
    return await _invoke(bot, mail, cmd, args, f"{line}: {entry['line']}")


def _people(mail: InboundMail) -> list[Any]:
    return list(mail.conversation.participants) if mail.conversation is not None else []


def transcript(bot: Bot, mail: InboundMail, results: list[Result]) -> str:
    """The answer's text: each command (indented, so a reply quoting it runs nothing) and
    what became of it; the list of usable commands when one was unknown or refused."""
    lines = ["What became of the commands in your mail:", ""]
    for result in results:
        first, *more = result.detail.splitlines() or [""]
        word = WORDS[result.status]
        lines += [f"    {result.line}", f"  {word}: {first}" if first else f"  {word}"]
        lines += [f"      {extra}" for extra in more]
    asked_help = any(r.line.lstrip("/").lower().startswith("help") for r in results)
    if not asked_help and any(r.status in ("unknown", "refused") for r in results):
        lines += ["", "Commands you may use here:", ""]
        lines += [f"    {row}" for row in help_text(bot, mail).splitlines()]
    return "\n".join(lines) + "\n"


async def answer(bot: Bot, mail: InboundMail, results: list[Result]) -> None:
    """One answer to the sender, threaded, with every command's result; recorded in the
    outcome. A stranger (mail to a command address) is answered only at an address SPF or
    DKIM proved, never at one that may be forged (backscatter)."""
    if not results:
        return
    ctx = bot.ctx
    ctx.outcome["commands"] = [r.to_json() for r in results]
    if all(r.status == "unknown" for r in results):
        # Only "/var is full"-like lines: prose, most likely; nobody is written to for it.
        ctx.outcome["transcript"] = "not sent: no known command"
        return
    body = transcript(bot, mail, results)
    proof = mail.authentication
    proved = proof is not None and (proof.sender_verified or bool(proof.smtp_auth))
    # A participant is answered at their address when they wrote through their own reply
    # address (the token is the credential) or their address is proved; one a bot has just
    # added (a new ticket from a From nobody proved) is not: that would be backscatter.
    if (
        mail.participant is not None
        and mail.conversation is not None
        and (mail.via == "token" or proved)
    ):
        await outbox.queue(
            ctx.session,
            ctx.settings,
            conversation=mail.conversation,
            to=mail.participant,
            subject=f"Re: {title(mail.conversation)}",
            body=body,
            in_reply_to=mail.message_id,
            inbound_id=mail.id,
            kind=KIND,
        )
        ctx.outcome["transcript"] = "sent"
        return
    if not proved or not mail.sender or mail.participant is not None:
        ctx.outcome["transcript"] = "not sent: the sender's address was not proved (SPF, DKIM)"
        return
    try:
        await outbox.queue_notice(
            ctx.session,
            ctx.settings,
            kind=KIND,
            to=mail.sender,
            subject=f"Re: {mail.subject}",
            body=body,
            in_reply_to=mail.message_id,
            inbound_id=mail.id,
        )
    except (headers.InvalidAddress, headers.UnsafeMessage) as unsafe:
        ctx.outcome["transcript"] = f"not sent: {unsafe}"
        return
    ctx.outcome["transcript"] = "sent"
