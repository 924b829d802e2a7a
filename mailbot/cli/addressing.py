"""``mailbot reply-address`` and ``mailbot notify``: hand a participant their reply address."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

import typer

from mailbot import headers
from mailbot.app import load_app
from mailbot.cli.common import DEFAULT_APP, AppOpt, JsonOpt, T, print_json, run, settings_from
from mailbot.config import Settings
from mailbot.outbound import delivery
from mailbot.outbound import outbox as outbound
from mailbot.store import conversations, tokens
from mailbot.store.db import Sessions
from mailbot.store.models import OutboundMessage
from mailbot.web import views


def _run_checked(settings: Settings, work: Callable[[Sessions], Awaitable[T]]) -> T:
    """Like run, with a refused address or key said in one line (exit status 2)."""
    try:
        return run(settings, work)
    except (headers.InvalidAddress, conversations.InvalidKey) as exc:
        typer.echo(f"mailbot: {exc}", err=True)
        raise typer.Exit(2) from exc


def reply_address(
    key: str,
    email: str,
    name: Annotated[str, typer.Option(help="the participant's display name")] = "",
    subject: Annotated[str, typer.Option(help="subject, for a new conversation")] = "",
    bot: Annotated[str, typer.Option(help="bot of a new conversation")] = "comments",
    app: AppOpt = DEFAULT_APP,
) -> None:
    """Print a new reply address for EMAIL in conversation KEY (both made if needed)."""
    settings = settings_from()
    load_app(app).bot(bot)  # an unknown bot is refused now, not when the first reply fails

    async def work(sessions: Sessions) -> str:
        async with sessions() as session, session.begin():
            convo = await conversations.ensure(
                session, key, settings.domain, subject=subject, bot=bot
            )
            participant = await conversations.ensure_participant(session, convo, email, name)
            token = await tokens.issue(
                session, participant, timedelta(days=settings.token_ttl_days)
            )
        return tokens.reply_address(token, settings.domain)

    typer.echo(_run_checked(settings, work))


def notify(
    key: str,
    email: str,
    subject: Annotated[str, typer.Option(help="the notification's subject")],
    body: Annotated[str, typer.Option(help="the notification's text")],
    name: Annotated[str, typer.Option(help="the participant's display name")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Send EMAIL the first notification of conversation KEY, with their own reply address."""
    settings = settings_from()

    async def work(sessions: Sessions) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            convo = await conversations.ensure(session, key, settings.domain, subject=subject)
            participant = await conversations.ensure_participant(session, convo, email, name)
            row = await outbound.queue(
                session,
                settings,
                conversation=convo,
                to=participant,
                subject=subject,
                body=f"{body}\n\n-- \nReply to this email to comment.\n",
            )
            # The live address, taken from the row just made: views redact it, and the
            # outbox may drop it once the mail is delivered.
            reply_to = row.reply_to
        await delivery.deliver_due(sessions, settings)
        async with sessions() as session:
            sent = await session.get(OutboundMessage, row.id)
            assert sent is not None
            return {**views.outbound_json(sent), "reply_to": reply_to}

    data = _run_checked(settings, work)
    if as_json:
        print_json(data, reveal_tokens=True)  # outbound_json redacted all but reply_to
        return
    # The status for the person; the reply address alone on stdout, for ADDR=$(mailbot notify ...).
    reason = f" ({data['reason']})" if data["reason"] else ""
    typer.echo(f"{data['status']}: {data['recipient']} {data['message_id']}{reason}", err=True)
    if data["reply_to"] is None:  # not composed (stored `failed`): no address to hand out
        raise typer.Exit(1)
    typer.echo(data["reply_to"])
