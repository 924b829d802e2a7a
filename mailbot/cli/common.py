"""What every command shares: settings, a database run, JSON output, the common options."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from mailbot.config import Settings
from mailbot.errors import ConfigError
from mailbot.redact import redact
from mailbot.store.db import Sessions, check_current, database, sqlite_file, upgrade

T = TypeVar("T")
DEFAULT_APP = "mailbot.bots.default:app"

AppOpt = Annotated[str, typer.Option("--app", help="module:attribute of the Mailbot to run")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable: one JSON object a line")]
LimitOpt = Annotated[int, typer.Option(min=1, max=1000, help="at most this many, newest first")]


def settings_from(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(settings_problems(exc)) from exc


def settings_problems(exc: ValidationError) -> str:
    """What is wrong with the settings, one line each, without the values given: pydantic's
    own text repeats them, cut short, so a password in a URL slips past the redaction."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        what = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{where} (MAILBOT_{where.upper()}): {what}" if where else what)
    return "bad settings: " + "; ".join(lines)


def run(
    settings: Settings, work: Callable[[Sessions], Awaitable[T]], *, reads_only: bool = False
) -> T:
    """``work`` against the database, migrated first. A command that only reads
    (``reads_only``) never makes a SQLite file: where there is none, it says so."""
    if reads_only:
        _must_exist(settings)

    async def main() -> T:
        async with database(settings.database_url) as (engine, sessions):
            if settings.should_migrate_on_start:
                await upgrade(engine)
            else:
                await check_current(engine)
            return await work(sessions)

    return asyncio.run(main())


def _must_exist(settings: Settings) -> None:
    path = sqlite_file(settings.database_url)
    if path is not None and not Path(path).exists():
        raise ConfigError(
            f"no database at {Path(path).resolve()}: nothing was received here yet (mailbot "
            "serve makes it), or MAILBOT_DATABASE_URL names another"
        )


def print_json(data: Any, *, reveal_tokens: bool = False) -> None:
    """One JSON line, redacted like every view (mailbot/redact.py); ``reveal_tokens`` only for
    a command printing the reply address it just minted."""
    typer.echo(json.dumps(data if reveal_tokens else redact(data), ensure_ascii=False, default=str))
