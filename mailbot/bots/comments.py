"""Reply by email to comment, GitHub-style.

Every participant of a conversation gets notifications whose Reply-To is their own
``reply+<token>@`` address. A reply becomes a comment by its author (the quoted history and
signature stripped), and every other participant is emailed the comment, threaded under the
conversation, with their own reply address. The author is not sent their own words back.

Commands in a reply: ``/unsubscribe`` stops this conversation's mail to its sender (their
reply address still works), ``/subscribe`` starts it again; ``/help`` lists them.
"""

from __future__ import annotations

from mailbot import Bot, InboundMail, command, display_name, title


class CommentsBot(Bot):
    name = "comments"

    async def before_process(self, mail: InboundMail) -> None:
        if mail.conversation is None or mail.participant is None:
            self.bounce("comments arrive only through a participant's reply address")

    async def process(self, mail: InboundMail) -> None:
        assert mail.conversation is not None and mail.participant is not None
        await self.ctx.comment(mail)
        author = mail.participant
        # A winmail.dat whose files came out is listed as those files.
        unpacked = {a.within for a in mail.attachments}
        files = [a for n, a in enumerate(mail.attachments) if not a.inline and n not in unpacked]
        listed = "".join(f"- {a.filename or 'unnamed'} ({_size(a.size)})\n" for a in files)
        await self.ctx.notify(
            mail.conversation.participants,
            subject=f"Re: {title(mail.conversation)}",
            body=f"{display_name(author)} wrote:\n\n{mail.reply}\n\n"
            + (f"Attached:\n{listed}\n" if files else "")
            + "-- \nReply to this email to comment.\n",
            in_reply_to=mail,
            author=author,
        )

    @command(help="stop mail from this conversation (your reply address still works)")
    async def unsubscribe(self, mail: InboundMail) -> str:
        assert mail.participant is not None
        self.ctx.mute(mail.participant)
        return "you will get no more mail from this conversation; /subscribe to undo"

    @command(help="get this conversation's mail again")
    async def subscribe(self, mail: InboundMail) -> str:
        assert mail.participant is not None
        self.ctx.mute(mail.participant, muted=False)
        return "you will get this conversation's mail again"


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"
