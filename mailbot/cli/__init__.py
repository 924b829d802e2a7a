"""mailbot: reply-by-email and command bots, for people and for scripts (--json prints one
object a line).

Every command reads the same settings as the server (MAILBOT_* variables, then
mailbot.toml), so mailbot notify in one terminal talks to the database mailbot serve uses
in another. Start with: mailbot serve, then mailbot inspector new.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Annotated

import click
import typer
from alembic.util.exc import CommandError
from pydantic_settings import SettingsError
from sqlalchemy.exc import DBAPIError
from typer.core import TyperArgument

from mailbot import __version__
from mailbot.cli import (
    access,
    addressing,
    configuring,
    db,
    describing,
    evaluation,
    handling,
    ingesting,
    outgoing,
    purging,
    serving,
    signing,
    viewing,
)
from mailbot.config import Settings
from mailbot.errors import ConfigError
from mailbot.redact import hide_secrets

# No rich tracebacks: they print every local variable, a database password among them.
cli = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help=__doc__,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(asked: bool) -> None:
    if asked:
        typer.echo(f"mailbot {__version__}")
        raise typer.Exit()


@cli.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="on failure, print the traceback too (secrets hidden)"),
    ] = False,
) -> None:
    """The options of every command: --version, --debug, -h."""
    if debug:  # read by main() when a command fails, and by child processes
        os.environ["MAILBOT_DEBUG"] = "1"


# The command table, by topic; `mailbot --help` lists commands in this order, then the groups.
cli.command()(serving.serve)
cli.command("smtp-password")(serving.smtp_password)
cli.command("reply-address")(addressing.reply_address)
cli.command()(addressing.notify)
cli.command()(describing.bots)
cli.command()(viewing.inbox)
cli.command()(viewing.message)
cli.command()(handling.replay)
cli.command()(ingesting.ingest)
cli.command("eval-strip")(evaluation.eval_strip)
cli.command("strip-case")(evaluation.strip_case)
cli.command()(purging.purge)
cli.add_typer(db.db_cli, name="db")
cli.add_typer(configuring.config_cli, name="config")
cli.add_typer(outgoing.outbox_cli, name="outbox")
cli.add_typer(viewing.conversation_cli, name="conversation")
cli.add_typer(addressing.inspector_cli, name="inspector")
cli.add_typer(handling.quarantine_cli, name="quarantine")
cli.add_typer(handling.spam_cli, name="spam")
cli.add_typer(access.api_token_cli, name="api-token")
cli.add_typer(signing.dkim_cli, name="dkim")

__all__ = ["cli", "main"]


def main() -> None:
    """Run a command; a failure is one line on stderr, never a traceback with secrets in it
    (``--debug`` or ``MAILBOT_DEBUG=1``: the traceback too, without local variables, secrets
    hidden). Exit 2: the settings or the command line are wrong; 1: anything else."""
    for name in Settings.unknown_environment():
        typer.echo(f"mailbot: warning: {name} is not a setting; ignored", err=True)
    try:
        _quiet_none_defaults(typer.main.get_command(cli))()
    except (ConfigError, SettingsError) as exc:
        _traceback(exc)
        typer.echo(f"mailbot: {hide_secrets(str(exc))}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last word: one line, and an exit code
        _traceback(exc)
        typer.echo(f"mailbot: {hide_secrets(_describe(exc))}", err=True)
        sys.exit(1)


def _quiet_none_defaults(command: click.Command) -> click.Command:
    """No "[default: None]" in any --help: a flag unset by default shows no default (serve's
    flags say the setting's own, see cli/serving.py)."""
    for param in command.params:
        if param.default is None and isinstance(param, click.Option | TyperArgument):
            param.show_default = False
    for sub in getattr(command, "commands", {}).values():
        _quiet_none_defaults(sub)
    return command


def _traceback(exc: BaseException) -> None:
    if os.environ.get("MAILBOT_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off"):
        typer.echo(hide_secrets("".join(traceback.format_exception(exc))), err=True)


# What to do, for the failures an operator meets first; anything else is named as it came.
_PORT_IN_USE = "another program listens there: stop it, or choose another port"
_NOT_WRITABLE = "mailbot keeps its state in MAILBOT_HOME: make it writable, or point it elsewhere"
_NOTHING_ANSWERS = (
    "nothing answers there: is the server up, and is the setting that names it right"
    " (MAILBOT_DATABASE_URL, MAILBOT_RELAY, MAILBOT_SPAMD)?"
)
_DATABASE = "check MAILBOT_DATABASE_URL (the server, the database, the user)"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"{text}; {_PORT_IN_USE} (MAILBOT_SMTP_PORT, MAILBOT_SMTPS_PORT, MAILBOT_HTTP_PORT)"
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EROFS, errno.ENOTDIR):
        return f"{text}; {_NOT_WRITABLE}"
    if isinstance(exc, DBAPIError):  # "(sqlalchemy.dialects...Error) <the server's words>"
        said = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else text
        return f"database: {said.split(') ', 1)[-1] if said.startswith('(') else said}; {_DATABASE}"
    if isinstance(exc, ConnectionRefusedError):
        return f"{text}; {_NOTHING_ANSWERS}"
    if isinstance(exc, CommandError):  # Alembic: a revision that is not there
        return f"migrations: {text}; a revision is one of the migration ids, or 'head'"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
