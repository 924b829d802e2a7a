"""A conversation that answers itself is paused: the ping-pong of two bots.

classify.py stops what says it is automatic (Auto-Submitted, bounces, list mail), and the
outbox's per-address limit caps what one address gets. A bot on the other side that says
nothing of the kind (an auto-responder that writes like a person, or another mailbot
set to answer every mail) still makes a loop: we answer, it answers, and so on. Here a
conversation with more than ``loop_max_replies`` replies acted on in the last
``loop_window_seconds`` refuses the next ones (``paused``, with why) until the window has
passed: people do not write twenty replies in ten minutes; bots do. Nobody is told (that
would be one more turn of the loop); the refusal is on the row, the page and the API.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot.config import Settings
from mailbot.errors import Rejection
from mailbot.status import InboundStatus, RefusalCode
from mailbot.store.models import InboundMessage, utcnow


async def check(session: AsyncSession, settings: Settings, conversation_id: int) -> None:
    """Refuse with ``paused`` if this conversation is answering itself."""
    most = settings.loop_max_replies
    if most <= 0:
        return
    window = timedelta(seconds=settings.loop_window_seconds)
    recent = await session.scalar(
        select(func.count())
        .select_from(InboundMessage)
        .where(
            InboundMessage.conversation_id == conversation_id,
            InboundMessage.status == InboundStatus.delivered,
            InboundMessage.received_at >= utcnow() - window,
        )
    )
    if (recent or 0) >= most:
        raise Rejection(
            f"conversation paused: {recent} replies in the last {_words(window)} looks like "
            "bots answering each other; mail to it is refused until it calms down",
            code=RefusalCode.paused,
        )


def _words(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    return f"{seconds // 60} minutes" if seconds % 60 == 0 else f"{seconds} seconds"
