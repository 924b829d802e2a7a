"""The last stage: the bot, with the commands found in the mail, in a savepoint of the
row's transaction (mailbot/pipeline/stages.py runs it; mailbot/commands/ reads and runs the
commands, mailbot/bot.py is what the bot sees).

One mail at a time per conversation: its row is locked first (``FOR UPDATE`` on
PostgreSQL; SQLite has one writer anyway) and the bot's state read after the lock, so two
workers never overwrite each other's state, and a ``/confirm`` code is used once
(mailbot/store/conversations.py ``lock``).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING

from mailbot.bot import Context, InboundMail, MailAttachment
from mailbot.commands import run as commands
from mailbot.errors import Bounce
from mailbot.store import conversations

if TYPE_CHECKING:
    from mailbot.pipeline.stages import InFlight


async def run_bot(mail: InFlight) -> None:
    assert mail.found is not None
    found, session = mail.found, mail.session
    analysis, row, bot_class = mail.read.analysis, mail.row, mail.bot_class
    if found.conversation is not None:
        await conversations.lock(session, found.conversation)
    said = commands.find(bot_class, analysis.reply, analysis.signature)
    inbound = InboundMail(
        id=row.id,
        parsed=analysis.parsed,
        reply=said.text,  # the known commands' lines lifted out
        signature=analysis.signature,
        quote=analysis.quote,
        mail_from=row.mail_from,
        rcpt_tos=list(row.rcpt_tos),
        conversation=found.conversation,
        participant=found.participant,
        commands=said.commands,
        via=found.via,
        authentication=mail.read.authentication,
        spam=mail.spam,
        attachments=MailAttachment.listed(analysis.parsed, analysis.attachments, mail.deps.blobs),
    )
    ctx = Context(
        session,
        mail.deps.settings,
        conversation=found.conversation,
        bot_name=found.bot,
        bot_settings=copy.deepcopy(mail.deps.app.bot_settings.get(found.bot, {})),
    )
    bot = bot_class(ctx)
    try:
        # A savepoint: a bot that bounces after writing leaves none of its writes behind,
        # while what the stages before it decided is kept with the bounce.
        async with session.begin_nested():
            too_big = bot_class.max_attachment_bytes
            if too_big is not None and any(a.size > too_big for a in inbound.attachments):
                bot.bounce(f"an attachment is over this address's limit of {too_big} bytes")
            await bot.before_process(inbound)
            results = await commands.run(bot, inbound)
            # A reply that held only commands makes no comment; a command mail is all commands.
            if not said.commands or (inbound.reply and bot_class.command_style == "slash"):
                await bot.process(inbound)
            await bot.after_process(inbound)
            await commands.answer(bot, inbound, results)
            ctx.save_state()
    except Bounce:
        await commands.reload(session, found.conversation, found.participant)
        raise
    mail.outcome.bot = ctx.outcome
    if found.conversation is None and inbound.conversation is not None:
        # The bot opened a conversation for this mail (a new ticket): the row names it.
        mail.found = dataclasses.replace(
            found, conversation=inbound.conversation, participant=inbound.participant
        )
