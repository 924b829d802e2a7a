"""``mailbot outbox [list] | retry ID | cancel ID``: what mailbot sends, and what an operator
may do about one mail (the same functions as ``POST /api/outbox/{id}/retry|cancel``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mailbot.cli.common import JsonOpt, LimitOpt, print_json, run, settings_from
from mailbot.outbound import operate
from mailbot.store.db import Sessions
from mailbot.store.models import OutboundMessage, OutboundStatus
from mailbot.web import views

outbox_cli = typer.Typer(
    help="Outbound mail: list it (the default), retry or cancel one.",
    invoke_without_command=True,
)

IdArg = Annotated[
    int, typer.Argument(min=1, max=2**63 - 1, help="the outbound message's id (mailbot outbox)")
]


@outbox_cli.callback()
def _default(ctx: typer.Context, as_json: JsonOpt = False, limit: LimitOpt = 100) -> None:
    if ctx.invoked_subcommand is None:
        list_(as_json=as_json, status=None, limit=limit)


@outbox_cli.command("list")
def list_(
    as_json: JsonOpt = False,
    status: Annotated[OutboundStatus | None, typer.Option(help="only this status")] = None,
    limit: LimitOpt = 100,
) -> None:
    """List outbound mail, newest first: held (nowhere to send), queued, sending, deferred
    (with when it is tried next), sent, failed or suppressed, with the reason.

    Example: mailbot outbox list --status deferred
    """
    settings = settings_from()

    async def work(sessions: Sessions) -> list[dict[str, Any]]:
        async with sessions() as session:
            return await views.outbox(session, status=status, limit=limit)

    for item in run(settings, work, reads_only=True):
        if as_json:
            print_json(item)
        else:
            _line(item)


@outbox_cli.command()
def retry(outbound_id: IdArg, as_json: JsonOpt = False) -> None:
    """Try a deferred, held, failed or suppressed mail again now, with a new delivery
    lifetime. A failed mail gets a fresh reply address; retrying the mail that suspended a
    participant after a hard bounce lifts the suspension. A running server sends it on its
    next pass.

    Example: mailbot outbox retry 42
    """
    settings = settings_from()

    async def work(sessions: Sessions) -> OutboundMessage:
        return await operate.retry(sessions, settings, outbound_id)

    _done(lambda: run(settings, work, reads_only=True), as_json)


@outbox_cli.command()
def cancel(outbound_id: IdArg, as_json: JsonOpt = False) -> None:
    """Do not send a mail that is not sent yet (held, queued or deferred): it becomes failed,
    "cancelled by an operator".

    Example: mailbot outbox cancel 42
    """
    settings = settings_from()

    async def work(sessions: Sessions) -> OutboundMessage:
        return await operate.cancel(sessions, outbound_id)

    _done(lambda: run(settings, work, reads_only=True), as_json)


def _done(action: Any, as_json: bool) -> None:
    try:
        row = action()
    except (LookupError, ValueError) as exc:
        typer.echo(f"mailbot: {exc}", err=True)
        raise typer.Exit(1) from None
    item = views.outbound_json(row)
    if as_json:
        print_json(item)
    else:
        _line(item)


def _line(item: dict[str, Any]) -> None:
    typer.echo(
        f"{item['id']:>6}  {item['status']:<10} {item['recipient']:<30} {item['subject']}"
        + (f"  [{item['reason']}]" if item["reason"] else "")
    )
