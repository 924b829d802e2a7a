"""A help desk by mail: ``support@`` opens a numbered ticket, replies add to it, commands
change it.

- Mail to ``support@<domain>`` from anyone opens ticket #N (a conversation of this bot),
  with its sender as the first participant; the sender is answered with the number and a
  reply address of their own, when SPF or DKIM proved the From address (an answer to a
  forged From would be backscatter).
- A reply through a reply address adds a comment; a reply to a closed ticket reopens it.
- ``/close``, ``/reopen`` (any participant), ``/assign @someone``, ``/label a, b``,
  ``/unlabel a``, ``/priority 1..4`` (participants with the role ``agent``) change it.
- Every change and comment is mailed to the other participants, once per mail, threaded.
- A ticket is joined only through a reply address, or by answering a mail the ticket sent
  to the same address: a stranger quoting "#12" in a new mail opens a new ticket.
"""

from __future__ import annotations

from mailbot import (
    Bot,
    CommandError,
    Context,
    Conversation,
    InboundMail,
    Mailbot,
    Participant,
    command,
    display_name,
)
from mailbot.bots.comments import CommentsBot

AGENT = "agent"
STATUS = "status"


class TicketsBot(Bot):
    name = "tickets"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.changes: list[str] = []
        self.opened = False
        self.was_closed = False  # before this mail's commands ran

    async def before_process(self, mail: InboundMail) -> None:
        if mail.conversation is not None:
            self.was_closed = self.ctx.state.get(STATUS) == "closed"
            return
        sender = mail.sender
        if sender is None:
            self.bounce("a ticket needs a sender address to answer")
        subject = mail.subject.strip() or "(no subject)"
        try:
            number, ticket = await self._new_ticket(subject)
            name = mail.parsed.from_[0].name if mail.parsed.from_ else ""
            mail.participant = await self.ctx.add_participant(ticket, sender, name)
        except ValueError as bad:
            self.bounce(f"no ticket opened: {bad}")
        mail.conversation = ticket
        self.ctx.state.update({"number": number, STATUS: "open", "labels": []})
        self.opened = True

    async def _new_ticket(self, subject: str) -> tuple[int, Conversation]:
        """The next number, past any key an app took by hand. Two tickets opened at once on
        two workers collide on the key; the loser's mail is retried and takes the next."""
        number = await self.ctx.count_conversations() + 1
        for _ in range(100):
            try:
                key = f"ticket-{number}"
                return number, await self.ctx.open_conversation(
                    key, subject=subject, exists_ok=False
                )
            except ValueError:
                number += 1
        raise ValueError("no free ticket number")

    async def process(self, mail: InboundMail) -> None:
        await self.ctx.comment(mail)
        # A reply to a ticket that was closed reopens it; "Fixed, thanks. /close" does not.
        if self.was_closed and self.ctx.state.get(STATUS) == "closed":
            self.ctx.state[STATUS] = "open"
            self.changes.append("reopened by this reply")

    @command(help="close the ticket")
    async def close(self, mail: InboundMail) -> str:
        if self.ctx.state.get(STATUS) == "closed":
            raise CommandError("the ticket is closed already")
        self.ctx.state[STATUS] = "closed"
        return self._changed("closed the ticket")

    @command(help="open the ticket again")
    async def reopen(self, mail: InboundMail) -> str:
        if self.ctx.state.get(STATUS) != "closed":
            raise CommandError("the ticket is open")
        self.ctx.state[STATUS] = "open"
        return self._changed("reopened the ticket")

    @command(help="hand the ticket to a participant", who=AGENT)
    async def assign(self, mail: InboundMail, to: Participant) -> str:
        self.ctx.state["assignee"] = to.email
        return self._changed(f"assigned the ticket to {display_name(to)}")

    @command(help="add labels", who=AGENT)
    async def label(self, mail: InboundMail, labels: list[str]) -> str:
        held = self.ctx.state.setdefault("labels", [])
        added = [label.lower() for label in labels if label.lower() not in held]
        if not added:
            raise CommandError("the ticket has those labels already")
        held.extend(added)
        return self._changed("labelled it " + ", ".join(added))

    @command(help="remove labels", who=AGENT)
    async def unlabel(self, mail: InboundMail, labels: list[str]) -> str:
        held = self.ctx.state.setdefault("labels", [])
        gone = [label.lower() for label in labels if label.lower() in held]
        if not gone:
            raise CommandError("the ticket has none of those labels")
        self.ctx.state["labels"] = [label for label in held if label not in gone]
        return self._changed("removed the labels " + ", ".join(gone))

    @command(help="set the priority: 1 (urgent) to 4 (low)", who=AGENT)
    async def priority(self, mail: InboundMail, level: int) -> str:
        if not 1 <= level <= 4:
            raise CommandError("the priority goes from 1 (urgent) to 4 (low)")
        self.ctx.state["priority"] = level
        return self._changed(f"set the priority to {level}")

    def _changed(self, what: str) -> str:
        self.changes.append(what)
        return what

    async def after_process(self, mail: InboundMail) -> None:
        ticket, author = mail.conversation, mail.participant
        if ticket is None or author is None:
            return
        subject = f"[#{self.ctx.state['number']}] {ticket.subject}"
        if self.opened:
            await self._acknowledge(mail, author, subject)
        said = [f"{display_name(author)} wrote:", "", mail.reply, ""] if mail.reply else []
        changes = [f"{display_name(author)} {change}." for change in self.changes]
        if not said and not changes:
            return
        footer = ["-- ", "Reply to this email to add to the ticket."]
        await self.ctx.notify(
            ticket.participants,
            subject=f"Re: {subject}",
            body="\n".join([*said, *changes, "", *footer]) + "\n",
            in_reply_to=mail,
            author=author,
        )

    async def _acknowledge(self, mail: InboundMail, author: Participant, subject: str) -> None:
        proof = mail.authentication
        if proof is None or not (proof.sender_verified or proof.smtp_auth):
            self.ctx.outcome["acknowledgement"] = "not sent: the From address was not proved"
            return
        number = self.ctx.state["number"]
        await self.ctx.send(
            author,
            subject=subject,
            body=f"We opened ticket #{number} for your mail, and will answer here.\n\n"
            "Reply to this email to add to the ticket; write /close on a line of its own "
            "to close it.\n",
            in_reply_to=mail,
        )


# ``mailbot serve --app mailbot.bots.tickets:app``: a help desk at support@, and comments.
app = Mailbot(bots=[CommentsBot, TicketsBot], routes=[("support", TicketsBot)])
