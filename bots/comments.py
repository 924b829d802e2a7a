"""Reply by email to comment, GitHub-style.

Every participant of a conversation gets notifications whose Reply-To is their own
``reply+<token>@`` address. A reply becomes a comment by its author (the quoted history and
signature stripped), and every other participant is emailed the comment, threaded under the
conversation, with their own reply address. The author is not sent their own words back.
"""

from __future__ import annotations

from mailbot import Bot, InboundMail, display_name, title


class CommentsBot(Bot):
    name = "comments"

    async def before_process(self, mail: InboundMail) -> None:
        if mail.conversation is None or mail.participant is None:
            self.bounce("comments arrive only through a participant's reply address")

    async def process(self, mail: InboundMail) -> None:
        assert mail.conversation is not None and mail.participant is not None
        await self.ctx.comment(mail)
        author = mail.participant
        for other in mail.conversation.participants:
            if other.id == author.id:
                continue
            await self.ctx.send(
                other,
                subject=f"Re: {title(mail.conversation)}",
                body=f"{display_name(author)} wrote:\n\n{mail.reply}\n\n"
                "-- \nReply to this email to comment.\n",
                in_reply_to=mail,
                author=author,
            )
