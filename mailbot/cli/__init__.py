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

import typer
from pydantic_settings import SettingsError

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
) -> None:
    """The options of every command: --version, -h."""


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
    (``MAILBOT_DEBUG=1``: the traceback too, without local variables, secrets hidden)."""
    for name in Settings.unknown_environment():
        typer.echo(f"mailbot: warning: {name} is not a setting; ignored", err=True)
    try:
        cli()
    except (ConfigError, SettingsError) as exc:
        typer.echo(f"mailbot: {hide_secrets(str(exc))}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last word: one line, and an exit code
        if os.environ.get("MAILBOT_DEBUG"):
            typer.echo(hide_secrets("".join(traceback.format_exception(exc))), err=True)
        typer.echo(f"mailbot: {hide_secrets(_describe(exc))}", err=True)
        sys.exit(1)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    said = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    advice = _advice(exc, text)
    return f"{said} ({advice})" if advice else said


def _advice(exc: BaseException, text: str) -> str | None:
    """What to do about the failures an operator meets first; None where we cannot say."""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return (
            "another process holds that port: stop it, or choose another with "
            "MAILBOT_SMTP_PORT, MAILBOT_SMTPS_PORT or MAILBOT_HTTP_PORT"
        )
    if isinstance(exc, PermissionError) and "bind" in text:
        return "ports below 1024 need CAP_NET_BIND_SERVICE (deploy/mailbot.service) or root"
    if isinstance(exc, (PermissionError, NotADirectoryError, IsADirectoryError, FileNotFoundError)):
        return "set MAILBOT_HOME to a folder this user may write, or fix the path named"
    if type(exc).__name__ == "TOMLDecodeError":
        return "the settings file (MAILBOT_CONFIG, else ./mailbot.toml) is not valid TOML"
    if type(exc).__name__ == "CommandError" and "revision" in text:
        return "name a revision in mailbot/migrations/versions, or none for the newest"
    if "does not exist" in text and "database" in text:
        return "create it (createdb), or point MAILBOT_DATABASE_URL at one that exists"
    if isinstance(exc, ConnectionError) or "Connect call failed" in text:
        return "is the database server running and reachable at MAILBOT_DATABASE_URL?"
    return None
