"""``mailbot replay``, ``quarantine`` and ``spam learn``: put stored mail through again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from email.utils import getaddresses
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from sqlalchemy import select

from mailbot import addresses
from mailbot.app import Mailbot, load_app
from mailbot.cli.common import (
    DEFAULT_APP,
    AppOpt,
    JsonOpt,
    LimitOpt,
    T,
    print_json,
    run,
    settings_from,
)
from mailbot.config import Settings
from mailbot.errors import ConfigError, SpamdUnavailable
from mailbot.outbound import delivery
from mailbot.pipeline import worker
from mailbot.pipeline.analyse import Analyser
from mailbot.pipeline.stages import Deps
from mailbot.recipients import Directory
from mailbot.smtp.handler import ReceiveHandler
from mailbot.spam import quarantine
from mailbot.spam.client import checker_for
from mailbot.store import blobs, spool
from mailbot.store.db import Sessions, readers
from mailbot.store.models import InboundMessage, InboundStatus
from mailbot.web import views

quarantine_cli = typer.Typer(no_args_is_help=True, help="Mail held as spam: list, release, delete.")
spam_cli = typer.Typer(no_args_is_help=True, help="Teach spamd's Bayes filter from stored mail.")


def replay(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a saved .eml")],
    to: Annotated[str, typer.Option("--to", help="the envelope recipient")],
    mail_from: Annotated[str | None, typer.Option("--from", help="envelope sender")] = None,
    app: AppOpt = DEFAULT_APP,
    as_json: JsonOpt = False,
) -> None:
    """Run a saved message through the same RCPT policy and pipeline as mail over SMTP."""
    settings = settings_from()
    mailbot_app = load_app(app, settings)
    raw = file.read_bytes()
    sender = mail_from if mail_from is not None else _header_address(raw, "from")

    async def work(sessions: Sessions) -> dict[str, Any]:
        directory = Directory.of(mailbot_app, settings.domains)
        refusal = await ReceiveHandler(settings, sessions, directory).refusal_for(
            *addresses.split(to)
        )
        if refusal is not None:
            return {"refused": refusal}
        envelope = spool.Envelope(mail_from=sender, rcpt_tos=[to], helo="replay")
        inbound_id = await spool.store(sessions, raw, envelope)
        await _process_now(settings, mailbot_app, sessions, inbound_id)
        async with sessions() as session:
            data = await views.inbound_one(session, inbound_id)
        assert data is not None
        return data

    data = run(settings, work)
    if as_json or "refused" in data:
        print_json(data)
    else:
        typer.echo(
            f"{data['id']} {data['status']}" + (f": {data['reason']}" if data["reason"] else "")
        )
    if "refused" in data:
        raise typer.Exit(1)


async def _process_now(
    settings: Settings, app: Mailbot, sessions: Sessions, inbound_id: int
) -> None:
    if not await spool.claim_one(sessions, inbound_id):
        # A running server's worker took it. Asked through reader connections: polling
        # must not take the write lock that node is working with.
        async with readers(settings.database_url, sessions) as reads:
            await _finished_elsewhere(reads, inbound_id)
        return
    async with Analyser(0, blob_root=blobs.root_for(settings)) as analyser:
        store = blobs.for_settings(settings)
        deps = Deps(settings, app, analyser, spam=checker_for(settings), blobs=store)
        await worker.handle(sessions, deps, inbound_id)
    await delivery.deliver_due(sessions, settings)


async def _finished_elsewhere(sessions: Sessions, inbound_id: int, seconds: float = 60.0) -> None:
    """Wait (a while) for the node that claimed it, so what is shown is how it ended."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    pause = 0.05
    while loop.time() < until:
        async with sessions() as session:
            row = (
                await session.execute(
                    select(InboundMessage.status, InboundMessage.attempts).where(
                        InboundMessage.id == inbound_id
                    )
                )
            ).first()
        # Done, or tried and waiting for a retry: either way, what it is now is the answer.
        if row is None or row.status != InboundStatus.processing and row.attempts > 0:
            return
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)


@quarantine_cli.command("list")
def quarantine_list(as_json: JsonOpt = False, limit: LimitOpt = 100) -> None:
    """List quarantined messages, newest first, with their spam score and top rules."""
    settings = settings_from()

    async def work(sessions: Sessions) -> list[dict[str, Any]]:
        async with sessions() as session:
            return await views.inbox(session, status=InboundStatus.quarantined, limit=limit)

    for item in run(settings, work):
        if as_json:
            print_json(item)
            continue
        sender = ", ".join(a["address"] for a in item["from"]) or item["envelope"]["mail_from"]
        spam = item["spam"]
        rules = sorted(spam.get("rules", []), key=lambda r: -r["score"])[:3]
        typer.echo(
            f"{item['id']:>6}  {spam.get('score', 0.0):>7.1f}  {sender:<30} "
            f"{item['subject'] or ''}  [{', '.join(r['name'] for r in rules)}]"
        )


@quarantine_cli.command("release")
def quarantine_release(
    inbound_id: int, app: AppOpt = DEFAULT_APP, as_json: JsonOpt = False
) -> None:
    """Take message ID out of quarantine and run it through the pipeline again."""
    settings = settings_from()
    mailbot_app = load_app(app, settings)

    async def work(sessions: Sessions) -> dict[str, Any] | None:
        await quarantine.release(sessions, inbound_id)
        await _process_now(settings, mailbot_app, sessions, inbound_id)
        async with sessions() as session:
            return await views.inbound_one(session, inbound_id)

    data = _run_or_exit(settings, work)
    if as_json:
        print_json(data)
    elif data is not None:
        reason = f": {data['reason']}" if data["reason"] else ""
        typer.echo(f"{data['id']} {data['status']}{reason}")


@quarantine_cli.command("delete")
def quarantine_delete(inbound_id: int) -> None:
    """Delete quarantined message ID for good."""
    settings = settings_from()

    async def work(sessions: Sessions) -> None:
        await quarantine.delete(sessions, inbound_id)

    _run_or_exit(settings, work)
    typer.echo(f"{inbound_id} deleted")


@spam_cli.command("learn")
def spam_learn(
    spam: Annotated[int | None, typer.Option("--spam", help="ID of a stored spam message")] = None,
    ham: Annotated[int | None, typer.Option("--ham", help="ID of a stored good message")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Teach spamd (TELL) that a stored message is spam or ham (spamd needs --allow-tell)."""
    if (spam is None) == (ham is None):
        typer.echo("give exactly one of --spam ID or --ham ID", err=True)
        raise typer.Exit(2)
    settings = settings_from()
    checker = checker_for(settings)
    if checker is None:
        raise ConfigError("MAILBOT_SPAMD is unset: there is no spamd to teach")
    kind: Literal["spam", "ham"] = "spam" if spam is not None else "ham"
    inbound_id = spam if spam is not None else ham
    assert inbound_id is not None

    async def work(sessions: Sessions) -> dict[str, Any]:
        store = blobs.for_settings(settings)
        return await quarantine.learn(sessions, checker, inbound_id, kind, store)

    record = _run_or_exit(settings, work)
    if as_json:
        print_json({"id": inbound_id, **record})
    else:
        news = "learned" if record["new_to_spamd"] else "already known to spamd"
        typer.echo(f"{inbound_id} taught as {kind}: {news}")


def _run_or_exit(settings: Settings, work: Callable[[Sessions], Awaitable[T]]) -> T:
    """Like run, with a missing message or an unreachable spamd said in one line."""
    try:
        return run(settings, work)
    except (LookupError, SpamdUnavailable) as exc:
        typer.echo(f"mailbot: {exc}", err=True)
        raise typer.Exit(1) from exc


def _header_address(raw: bytes, name: str) -> str:
    from mailbot.parse import parse

    value = parse(raw).header(name) or ""
    found = getaddresses([value])
    return found[0][1] if found else ""
