"""The ``mailbot`` command, for people and for scripts (``--json`` prints one object a line).

Every command reads the same settings as the server (``MAILBOT_*``, ``mailbot.toml``), so
``mailbot notify`` in one terminal talks to the database ``mailbot serve`` uses in another.
"""

from __future__ import annotations

import sys

import typer

from mailbot.cli import access, addressing, db, evaluation, handling, purging, serving, viewing
from mailbot.errors import ConfigError

cli = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

# The command table, by topic; `mailbot --help` lists commands in this order, then the groups.
cli.command()(serving.serve)
cli.command("smtp-password")(serving.smtp_password)
cli.command("reply-address")(addressing.reply_address)
cli.command()(addressing.notify)
cli.command()(viewing.inbox)
cli.command()(viewing.outbox)
cli.command()(handling.replay)
cli.command("eval-strip")(evaluation.eval_strip)
cli.command()(purging.purge)
cli.add_typer(db.db_cli, name="db")
cli.add_typer(viewing.conversation_cli, name="conversation")
cli.add_typer(handling.quarantine_cli, name="quarantine")
cli.add_typer(handling.spam_cli, name="spam")
cli.add_typer(access.api_token_cli, name="api-token")

__all__ = ["cli", "main"]


def main() -> None:
    try:
        cli()
    except ConfigError as exc:
        typer.echo(f"mailbot: {exc}", err=True)
        sys.exit(2)
