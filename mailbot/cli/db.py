"""``mailbot db``: the database schema."""

from __future__ import annotations

import asyncio

import typer

from mailbot.cli.common import settings_from
from mailbot.store.db import database, upgrade

db_cli = typer.Typer(no_args_is_help=True, help="Database schema migrations.")


@db_cli.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    settings = settings_from()

    async def main() -> None:
        async with database(settings.database_url) as (engine, _sessions):
            await upgrade(engine, revision)

    asyncio.run(main())
    typer.echo(f"database at {revision}")
