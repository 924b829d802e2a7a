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
from mailbot.store import conversations, temporary, tokens
from mailbot.store.db import Sessions
from mailbot.store.models import OutboundMessage
from mailbot.web import views


def _run_checked(
    settings: Settings, work: Callable[[Sessions], Awaitable[T]], email: str | None = None
) -> T:
    """Like run, with a refused address or key said in one line (exit status 2); ``email``
    is checked first, so a malformed one leaves no database behind."""
    try:
        if email is not None:
            headers.participant_address(email)
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
    load_app(app, settings).bot(
        bot
    )  # an unknown bot is refused now, not when the first reply fails

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

    typer.echo(_run_checked(settings, work, email))


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

    data = _run_checked(settings, work, email)
    if as_json:
        print_json(data, reveal_tokens=True)  # outbound_json redacted all but reply_to
        return
    # The status for the person; the reply address alone on stdout, for ADDR=$(mailbot notify ...).
    reason = f" ({data['reason']})" if data["reason"] else ""
    typer.echo(f"{data['status']}: {data['recipient']} {data['message_id']}{reason}", err=True)
    if data["reply_to"] is None:  # not composed (stored `failed`): no address to hand out
        raise typer.Exit(1)
    typer.echo(data["reply_to"])


inspector_cli = typer.Typer(no_args_is_help=True, help="Temporary addresses to look at mail.")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> timedelta:
    number, unit = text[:-1], text[-1:].lower()
    if (
        unit not in _UNITS
        or not number.isdigit()
        or not 60 <= int(number) * _UNITS[unit] <= 7 * 86400
    ):
        raise typer.BadParameter("a time like 90s, 30m, 1h or 2d, from a minute to 7 days")
    return timedelta(seconds=int(number) * _UNITS[unit])


@inspector_cli.command("new")
def inspector_new(
    ttl: Annotated[str, typer.Option(help="how long it takes mail: 90s, 30m, 1h, 2d")] = "1h",
    app: AppOpt = DEFAULT_APP,
    as_json: JsonOpt = False,
) -> None:
    """Print a new temporary address: mail to it is kept as parsed JSON and shown live on the
    page (the inbox filtered on its conversation); after TTL it refuses mail (550).

    Example: mailbot inspector new --ttl 30m
    """
    lasts = _duration(ttl)
    settings = settings_from()
    owners = [b for b in load_app(app, settings).bots.values() if b.subdomain]
    if not owners:
        typer.echo(f"mailbot: the app {app} has no bot with temporary addresses", err=True)
        raise typer.Exit(2)
    bot, subdomain = owners[0].name, owners[0].subdomain or ""

    async def work(sessions: Sessions) -> temporary.Temporary:
        async with sessions() as session, session.begin():
            return await temporary.make(
                session, bot=bot, subdomain=subdomain, domain=settings.domain, ttl=lasts
            )

    made = run(settings, work)
    if as_json:
        data = {"address": made.address, "conversation": made.key, "expires_at": made.expires_at}
        print_json(data, reveal_tokens=True)
        return
    typer.echo(made.address)
    typer.echo(
        f"expires {made.expires_at:%Y-%m-%d %H:%M} UTC; its mail: the inbox with "
        f"conversation:{made.key}",
        err=True,
    )
