"""``mailbot api-token``: credentials for the page and the API off loopback."""

from __future__ import annotations

import typer
from sqlalchemy.exc import IntegrityError

from mailbot.cli.common import print_json, run, settings_from
from mailbot.store import api_tokens
from mailbot.store.db import Sessions

api_token_cli = typer.Typer(no_args_is_help=True, help="Tokens for the HTTP API and the page.")


@api_token_cli.command("create")
def create(name: str) -> None:
    """Make a token named NAME and print it (once: only its hash is kept)."""
    settings = settings_from()

    async def work(sessions: Sessions) -> str:
        async with sessions() as session, session.begin():
            return await api_tokens.create(session, name)

    try:
        typer.echo(run(settings, work))
    except IntegrityError:
        typer.echo(f"mailbot: a token named {name!r} exists: revoke it or pick another", err=True)
        raise typer.Exit(1) from None


@api_token_cli.command("list")
def listed() -> None:
    """The tokens by name: when made, last used, revoked (never the token)."""
    settings = settings_from()

    async def work(sessions: Sessions) -> list[dict[str, object]]:
        async with sessions() as session:
            return await api_tokens.listed(session)

    for item in run(settings, work):
        print_json(item)


@api_token_cli.command("revoke")
def revoke(name: str) -> None:
    """Revoke the token named NAME."""
    settings = settings_from()

    async def work(sessions: Sessions) -> bool:
        async with sessions() as session, session.begin():
            return await api_tokens.revoke(session, name)

    if not run(settings, work):
        typer.echo(f"mailbot: no live token named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{name} revoked")
