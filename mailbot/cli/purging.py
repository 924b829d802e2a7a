"""``mailbot purge``: retention by hand (``serve`` runs the same every hour)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from mailbot.cli.common import JsonOpt, print_json, run, settings_from
from mailbot.store import blobs, retention
from mailbot.store.db import Sessions

OlderThanOpt = Annotated[
    int | None,
    typer.Option("--older-than", min=0, help="days since receipt (default: retention_days)"),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="count what would go; remove nothing")]


def purge(
    older_than: OlderThanOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False
) -> None:
    """Remove the raw mail and attachments of messages in a final status received more than
    DAYS ago, and blobs no message names; conversations, comments and text stay."""
    settings = settings_from()
    days = settings.retention_days if older_than is None else older_than
    if older_than is None and days == 0:
        typer.echo("retention is off (retention_days = 0): give --older-than DAYS to purge")
        return
    store = blobs.for_settings(settings)

    async def work(sessions: Sessions) -> retention.Purged:
        report = await retention.purge(sessions, store, timedelta(days=days), dry_run=dry_run)
        if not dry_run:
            report.orphans_removed = await retention.collect_garbage(sessions, store)
        return report

    report = run(settings, work)
    if as_json:
        print_json({"older_than_days": days, **report.to_json()})
        return
    verb = "would remove" if dry_run else "removed"
    typer.echo(
        f"{verb} the raw mail of {report.messages} message(s) older than {days} day(s): "
        f"{report.raw_bytes} bytes, {report.attachments} attachment(s), {report.blobs} blob(s)"
    )
    if not dry_run:
        kept = report.blobs - report.blobs_removed
        typer.echo(
            f"{report.blobs_removed} blob(s) deleted"
            + (f", {kept} kept (named by other mail, or reused within the hour)" if kept else "")
            + f"; {report.orphans_removed} orphaned blob(s) collected"
        )
