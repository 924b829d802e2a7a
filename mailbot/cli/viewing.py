"""``mailbot inbox``, ``message`` and ``conversation show``: read what is stored."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot.cli.common import JsonOpt, LimitOpt, print_json, run, settings_from
from mailbot.redact import redact
from mailbot.store.db import Sessions
from mailbot.store.models import InboundStatus
from mailbot.web import views

conversation_cli = typer.Typer(no_args_is_help=True, help="Conversations and their comments.")


def inbox(
    as_json: JsonOpt = False,
    status: Annotated[InboundStatus | None, typer.Option(help="only this status")] = None,
    limit: LimitOpt = 100,
) -> None:
    """List received messages, newest first, with their status and reason."""
    settings = settings_from()

    async def work(sessions: Sessions) -> list[dict[str, Any]]:
        async with sessions() as session:
            return await views.inbox(session, status=status, limit=limit)

    for item in run(settings, work, reads_only=True):
        if as_json:
            print_json(item)
        else:
            sender = ", ".join(a["address"] for a in item["from"]) or item["envelope"]["mail_from"]
            typer.echo(
                f"{item['id']:>6}  {item['status']:<11} {sender:<30} {item['subject'] or ''}"
                + (f"  [{item['reason']}]" if item["reason"] else "")
                + _cuts(item)
            )


def message(inbound_id: int, as_json: JsonOpt = False) -> None:
    """Show one received message: status, reason, attempts, what the bot did, and, for one
    whose handler raised, where (the traceback of its last attempt).

    Example: mailbot message 42
    """
    data = _one(lambda session: views.inbound_one(session, inbound_id), f"message {inbound_id}")
    if as_json:
        print_json(data)
        return
    sender = ", ".join(a["address"] for a in data["from"]) or data["envelope"]["mail_from"]
    typer.echo(f"message {data['id']}: {data['status']} after {data['attempts']} attempt(s)")
    typer.echo(f"from: {sender}\nsubject: {data['subject'] or ''}")
    for name in ("reason", "bot", "conversation"):
        if data[name]:
            typer.echo(f"{name}: {data[name]}")
    error = (data["outcome"] or {}).get("error")
    if error:
        typer.echo(f"the handler raised (attempt {error['attempt']}):")
        typer.echo(error["traceback"].rstrip())


def _one(
    fetch: Callable[[AsyncSession], Awaitable[dict[str, Any] | None]], what: str
) -> dict[str, Any]:
    """One thing read from the database, redacted (a traceback or a subject may quote a
    reply address), or `no <what>` and exit 1."""

    async def work(sessions: Sessions) -> dict[str, Any] | None:
        async with sessions() as session:
            return await fetch(session)

    data = run(settings_from(), work, reads_only=True)
    if data is None:
        typer.echo(f"no {what}", err=True)
        raise typer.Exit(1)
    return redact(data)  # type: ignore[no-any-return]


def _cuts(item: dict[str, Any]) -> str:
    """The rules that cut the quote and the signature, and at which line: one look shows a
    wrong cut (issue #14)."""
    rules = (((item.get("outcome") or {}).get("cut") or {}).get("rules")) or []
    made = [f"{r['part']} {r['rule']}@{r['line']}" for r in rules if r.get("decided")]
    return f"  cut: {', '.join(made)}" if made else ""


@conversation_cli.command("show")
def conversation_show(key: str, as_json: JsonOpt = False) -> None:
    """Show a conversation with its participants and comments."""
    data = _one(lambda session: views.conversation(session, key), f"conversation {key!r}")
    if as_json:
        print_json(data)
        return
    typer.echo(f"{data['key']}: {data['subject']}  (bot: {data['bot']})")
    typer.echo("participants: " + ", ".join(p["email"] for p in data["participants"]))
    if data["state"]:
        typer.echo("state: " + json.dumps(data["state"], ensure_ascii=False, sort_keys=True))
    for comment in data["comments"]:
        typer.echo(f"\n--- {comment['author']} at {comment['created_at']}\n{comment['body']}")
