"""The inspector: temporary addresses whose mail is kept as parsed JSON, to look at.

``mailbot inspector new --ttl 1h`` (or the page's button, or ``POST /api/inspector``) makes
``<random>@inspect.<domain>``. Mail to it from anyone is stored, parsed, checked (SPF, DKIM,
DMARC, spam) and stripped like any other, and shown live on the page (filter
``conversation:inspect-…``), with every stage it went through. Nothing is ever sent back:
an inspector cannot be part of a mail loop. Once the address has expired, RCPT answers 550.
"""

from __future__ import annotations

from mailbot import Bot, InboundMail


class InspectorBot(Bot):
    name = "inspector"
    subdomain = "inspect"
    sender_policy = "open"  # anyone may write to a temporary address: that is its point
    accepts_empty = True  # an empty mail, or attachments only, is worth looking at too
    loop_guard = False  # it never answers, so it cannot loop; a test may send many at once
    command_style = None  # nor does it answer a /help: nothing is ever sent from here

    async def process(self, mail: InboundMail) -> None:
        self.ctx.outcome["inspected"] = {
            "from": mail.sender,
            "subject": mail.subject,
            "attachments": len(mail.attachments),
        }
