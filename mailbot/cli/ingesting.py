"""``mailbot ingest``: a message handed over by another mail server (Postfix's or Exim's
pipe transport), into the same spool SMTP fills, as Action Mailbox's relay ingress does.

A site that already runs Postfix keeps it in front and pipes the reply domain to mailbot
(``master.cf``: ``mailbot unix - n n - - pipe flags=Rq user=mailbot argv=/path/mailbot
ingest --to ${recipient} --from ${sender} --client-ip ${client_address} --helo ${client_helo}``).
The exit code is what the MTA acts on (sysexits.h): 0 stored (the running node's worker
takes it, at its next poll or at once on PostgreSQL); 67 no such recipient (bounced); 65
refused as it is (over a limit; bounced); 75 try again later (the database is away;
the MTA keeps it queued). The message is read whole from stdin, at most max_message_size.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mailbot.app import load_app
from mailbot.cli.common import DEFAULT_APP, AppOpt, run, settings_from
from mailbot.recipients import Directory, lookup
from mailbot.screen import Limits, screen_headers
from mailbot.store import spool
from mailbot.store.db import Sessions

STORED, DATAERR, NOUSER, TEMPFAIL = 0, 65, 67, 75


def ingest(
    to: Annotated[list[str], typer.Option("--to", help="a recipient (repeat for more)")],
    sender: Annotated[str, typer.Option("--from", help="the envelope sender; '' for <>")] = "",
    client_ip: Annotated[str | None, typer.Option(help="the sending client's IP (SPF)")] = None,
    helo: Annotated[str | None, typer.Option(help="the sending client's HELO name")] = None,
    app: AppOpt = DEFAULT_APP,
) -> None:
    """Store one message from stdin for RECIPIENTs, as a pipe transport calls it; exit 0
    (stored), 67 (unknown recipient), 65 (refused) or 75 (try again).

    Example: mailbot ingest --to reply+TOKEN@reply.example.org --from ann@example.com < m.eml
    """
    try:  # bad settings or app: the site's to fix; the MTA keeps the mail meanwhile
        settings = settings_from()
        directory = Directory.of(load_app(app, settings), settings.domains)
        limit = settings.max_message_size
        raw = sys.stdin.buffer.read(limit + 1)
    except Exception as exc:  # noqa: BLE001 - any of them: try again later, never a bounce
        _leave(TEMPFAIL, f"try again later: {type(exc).__name__}: {exc}")
    if len(raw) > limit:
        _leave(DATAERR, f"message over max_message_size ({limit} bytes)")
    over = screen_headers(raw, Limits.from_settings(settings))
    if over is not None:
        _leave(DATAERR, over.reason)
    envelope = spool.Envelope(
        mail_from="" if sender in ("", "<>") else sender,
        rcpt_tos=list(to),
        client_ip=client_ip,
        helo=helo,
        tls=False,
        auth_user=None,
    )

    async def work(sessions: Sessions) -> tuple[int, str]:
        for address in to:
            found = await lookup(address, directory, sessions)
            if found.why is not None:
                return NOUSER, f"{found.address}: {found.why.value.replace('_', ' ')}"
        return STORED, f"queued as {await spool.store(sessions, raw, envelope)}"

    try:
        code, said = run(settings, work)
    except Exception as exc:  # noqa: BLE001 - whatever it was, the MTA must keep the message
        _leave(TEMPFAIL, f"try again later: {type(exc).__name__}")
    _leave(code, said)


def _leave(code: int, said: str) -> None:
    # One line on stderr: the MTA puts it in its bounce or its log (redacted: a token).
    from mailbot.redact import hide_secrets, redact_text

    typer.echo(f"mailbot ingest: {hide_secrets(redact_text(said))}", err=True)
    raise typer.Exit(code)
