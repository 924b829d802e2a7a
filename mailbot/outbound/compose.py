"""The bytes of every mail mailbot sends, built in one place.

A bot's notification (:func:`mailbot.outbound.outbox.queue`) and a refusal notice
(:func:`mailbot.outbound.outbox.queue_notice`) differ only in what is passed here: the
``Auto-Submitted`` value, a Reply-To (a notice has none: no reply token is handed to a
stranger), the threading and the conversation key. Every header value goes through
:mod:`mailbot.headers`, and the finished bytes are checked once more.
"""

from __future__ import annotations

from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import format_datetime

from mailbot import headers
from mailbot.config import Settings
from mailbot.outbound.rendering import OutgoingFile
from mailbot.store.models import utcnow

# RFC 3834 Auto-Submitted values: a bot's own mail, and an answer to a mail sent to us.
AUTO_GENERATED = "auto-generated"
AUTO_REPLIED = "auto-replied"


def compose(
    settings: Settings,
    *,
    sender_name: str,
    to_name: str,
    recipient: str,
    reply_to: str | None,
    subject: str,
    body: str,
    message_id: str,
    thread: tuple[str | None, str | None],
    auto_submitted: str,
    conversation_key: str | None,
    list_id: str | None = None,
    unsubscribe: str | None = None,
    html: str | None = None,
    files: Sequence[OutgoingFile] = (),
) -> bytes:
    """The message's bytes, every header value made safe by mailbot.headers (already-clean
    values pass through unchanged); address and message-id fields set as headers.py folded
    them. ``thread`` is (root, parent): In-Reply-To is the parent, References both.
    ``html``, an alternative to the text; ``files``, attachments. The bytes are checked once
    more (:func:`headers.check_composed`)."""
    msg = EmailMessage(policy=headers.COMPOSE_POLICY)
    from_limit = 2 * headers.NAME_MAX + 10  # "author (via name)"
    msg.set_raw(
        "From", headers.mailbox("From", sender_name, settings.from_address, name_limit=from_limit)
    )
    msg.set_raw("To", headers.mailbox("To", to_name, recipient))
    if reply_to is not None:
        msg.set_raw("Reply-To", headers.mailbox("Reply-To", "", reply_to))
    msg.set_raw("Subject", headers.unstructured("Subject", headers.subject(subject)))
    # Our own values, set raw: the header registry's parse and refold of each cost more
    # than the rest of the message (mailbot/outbound/ is on the worker's hot path).
    msg.set_raw("Date", format_datetime(utcnow()))
    msg.set_raw("Message-ID", _own_id(message_id))
    root, parent = thread
    if parent:
        msg.set_raw("In-Reply-To", parent)
        msg.set_raw("References", headers.message_ids("References", [root, parent]) or parent)
    # RFC 3834: automatic mail, so well-behaved responders (and other mailbots) never answer.
    if auto_submitted not in (AUTO_GENERATED, AUTO_REPLIED):
        raise ValueError(f"Auto-Submitted {auto_submitted!r} is none of mailbot's")
    msg.set_raw("Auto-Submitted", auto_submitted)
    msg.set_raw("X-Auto-Response-Suppress", "All")
    if list_id is not None:  # mail of one conversation, as a list is (clients group it)
        msg.set_raw("List-Id", f"<{list_id}>")
    if unsubscribe is not None:  # RFC 8058 one-click: mailbot/outbound/unsubscribe.py
        msg.set_raw("List-Unsubscribe", f"<{unsubscribe}>")
        msg.set_raw("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    if conversation_key is not None:
        value = headers.unstructured("X-Mailbot-Conversation", conversation_key)
        msg.set_raw("X-Mailbot-Conversation", value)
    # A lone surrogate (from undecodable argv) would make the encoder raise.
    msg.set_content(body.encode("utf-8", "replace").decode("utf-8"))
    if html is not None:  # already cleaned (mailbot/outbound/rendering.py)
        msg.add_alternative(html.encode("utf-8", "replace").decode("utf-8"), subtype="html")
    for file in files:
        name, main, sub, data = file.cleaned()
        msg.add_attachment(data, maintype=main, subtype=sub, filename=name)
    raw = msg.as_bytes()
    headers.check_composed(raw, msg.keys())
    return raw


def _own_id(message_id: str) -> str:
    """A Message-ID mailbot made (mailbot/outbound/outbox.py ``new_message_id``), checked as
    any other id is before it is set raw."""
    checked = headers.message_id(message_id)
    if checked is None or checked != message_id:
        raise headers.UnsafeMessage(f"not a message-id: {message_id[:80]!r}")
    return checked
