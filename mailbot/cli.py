"""The ``mailbot`` command, for people and for scripts (``--json`` prints one object a line).

Every command reads the same settings as the server (``MAILBOT_*``, ``mailbot.toml``), so
``mailbot notify`` in one terminal talks to the database ``mailbot serve`` uses in another.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from email.utils import getaddresses
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from pydantic import ValidationError

from mailbot import (
    addresses,
    conversations,
    headers,
    outbound,
    quarantine,
    spool,
    tokens,
    views,
    worker,
)
from mailbot.analyse import Analyser
from mailbot.app import Mailbot, load_app
from mailbot.config import Settings
from mailbot.db import Sessions, check_current, database, upgrade
from mailbot.errors import ConfigError, SpamdUnavailable
from mailbot.models import InboundStatus, OutboundMessage
from mailbot.pipeline import Deps
from mailbot.receive import ReceiveHandler
from mailbot.recipients import Directory
from mailbot.redact import redact
from mailbot.spam import checker_for

cli = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_cli = typer.Typer(no_args_is_help=True, help="Database schema migrations.")
conversation_cli = typer.Typer(no_args_is_help=True, help="Conversations and their comments.")
cli.add_typer(db_cli, name="db")
cli.add_typer(conversation_cli, name="conversation")
quarantine_cli = typer.Typer(no_args_is_help=True, help="Mail held as spam: list, release, delete.")
spam_cli = typer.Typer(no_args_is_help=True, help="Teach spamd's Bayes filter from stored mail.")
cli.add_typer(quarantine_cli, name="quarantine")
cli.add_typer(spam_cli, name="spam")

T = TypeVar("T")
DEFAULT_APP = "bots.default:app"

AppOpt = Annotated[str, typer.Option("--app", help="module:attribute of the Mailbot to run")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable: one JSON object a line")]
LimitOpt = Annotated[int, typer.Option(min=1, max=1000, help="at most this many, newest first")]


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(str(exc)) from exc


def _run(settings: Settings, work: Callable[[Sessions], Awaitable[T]]) -> T:
    async def main() -> T:
        async with database(settings.database_url) as (engine, sessions):
            if settings.should_migrate_on_start:
                await upgrade(engine)
            else:
                await check_current(engine)
            return await work(sessions)

    return asyncio.run(main())


def _print_json(data: Any, *, reveal_tokens: bool = False) -> None:
    """One JSON line, redacted like every view (mailbot/redact.py); ``reveal_tokens`` only for
    a command printing the reply address it just minted."""
    typer.echo(json.dumps(data if reveal_tokens else redact(data), ensure_ascii=False, default=str))


@cli.command()
def serve(
    app: AppOpt = DEFAULT_APP,
    domain: Annotated[str | None, typer.Option(help="domain we receive for")] = None,
    smtp_host: Annotated[str | None, typer.Option()] = None,
    smtp_port: Annotated[int | None, typer.Option()] = None,
    http_host: Annotated[str | None, typer.Option()] = None,
    http_port: Annotated[int | None, typer.Option()] = None,
    database_url: Annotated[str | None, typer.Option()] = None,
    relay: Annotated[str | None, typer.Option(help="smtp://host:port for outbound mail")] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate (chain) for STARTTLS and --smtps-port")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert")] = None,
    smtps_port: Annotated[int | None, typer.Option(help="implicit-TLS port, e.g. 465")] = None,
    require_starttls: Annotated[
        bool | None, typer.Option(help="refuse MAIL before STARTTLS (not for a public MX)")
    ] = None,
    api_token: Annotated[
        str | None,
        typer.Option(
            help="HTTP API bearer token (prefer MAILBOT_API_TOKEN: a flag shows in `ps`)",
            show_default=False,
        ),
    ] = None,
    insecure_no_auth: Annotated[
        bool | None,
        typer.Option(
            "--insecure-no-auth",
            help="serve the HTTP API on a non-loopback address without a token",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run SMTP, worker, outbox and HTTP in one process until Ctrl-C.

    Without --tls-cert/--tls-key, STARTTLS uses a self-signed pair made on the first start
    and kept beside the database (see mailbot/tls.py). The HTTP API refuses to start on a
    non-loopback --http-host without --api-token (or --insecure-no-auth)."""
    from mailbot.serve import serve_forever

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    settings = _settings(
        domain=domain,
        smtp_host=smtp_host,
        smtp_port=smtp_port,
        http_host=http_host,
        http_port=http_port,
        database_url=database_url,
        relay=relay,
        tls_cert=tls_cert,
        tls_key=tls_key,
        smtps_port=smtps_port,
        require_starttls=require_starttls,
        api_token=api_token,
        insecure_no_auth=insecure_no_auth,
    )
    asyncio.run(serve_forever(settings, load_app(app)))


@cli.command("smtp-password")
def smtp_password(
    name: Annotated[str, typer.Argument(help="the submitter's login name")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
) -> None:
    """Print a [smtp_users] line for mailbot.toml: NAME may then use SMTP AUTH (over TLS).

    Only the scrypt hash is printed; the password itself is stored nowhere."""
    from mailbot.submitters import hash_password

    typer.echo(f"{json.dumps(name)} = {json.dumps(hash_password(password))}")


@db_cli.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    settings = _settings()

    async def main() -> None:
        async with database(settings.database_url) as (engine, _sessions):
            await upgrade(engine, revision)

    asyncio.run(main())
    typer.echo(f"database at {revision}")


def _run_checked(settings: Settings, work: Callable[[Sessions], Awaitable[T]]) -> T:
    """Like _run, with a refused address or key said in one line (exit status 2)."""
    try:
        return _run(settings, work)
    except (headers.InvalidAddress, conversations.InvalidKey) as exc:
        typer.echo(f"mailbot: {exc}", err=True)
        raise typer.Exit(2) from exc


@cli.command("reply-address")
def reply_address(
    key: str,
    email: str,
    name: Annotated[str, typer.Option(help="the participant's display name")] = "",
    subject: Annotated[str, typer.Option(help="subject, for a new conversation")] = "",
    bot: Annotated[str, typer.Option(help="bot of a new conversation")] = "comments",
) -> None:
    """Print a new reply address for EMAIL in conversation KEY (both made if needed)."""
    settings = _settings()

    async def work(sessions: Sessions) -> str:
        async with sessions() as session, session.begin():
            convo = await conversations.ensure(
                session, key, settings.domain, subject=subject, bot=bot
            )
            participant = await conversations.ensure_participant(session, convo, email, name)
            token = await tokens.issue(
                session, participant, timedelta(days=settings.token_ttl_days)
            )
        return tokens.reply_address(token, settings.domain)

    typer.echo(_run_checked(settings, work))


@cli.command()
def notify(
    key: str,
    email: str,
    subject: Annotated[str, typer.Option(help="the notification's subject")],
    body: Annotated[str, typer.Option(help="the notification's text")],
    name: Annotated[str, typer.Option(help="the participant's display name")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Send EMAIL the first notification of conversation KEY, with their own reply address."""
    settings = _settings()

    async def work(sessions: Sessions) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            convo = await conversations.ensure(session, key, settings.domain, subject=subject)
            participant = await conversations.ensure_participant(session, convo, email, name)
            row = await outbound.queue(
                session,
                settings,
                conversation=convo,
                to=participant,
                subject=subject,
                body=f"{body}\n\n-- \nReply to this email to comment.\n",
            )
            # The live address, taken from the row just made: views redact it, and the
            # outbox may drop it once the mail is delivered.
            reply_to = row.reply_to
        await outbound.deliver_due(sessions, settings)
        async with sessions() as session:
            sent = await session.get(OutboundMessage, row.id)
            assert sent is not None
            return {**views.outbound_json(sent), "reply_to": reply_to}

    data = _run_checked(settings, work)
    if as_json:
        _print_json(data, reveal_tokens=True)  # outbound_json redacted all but reply_to
        return
    # The status for the person; the reply address alone on stdout, for ADDR=$(mailbot notify ...).
    reason = f" ({data['reason']})" if data["reason"] else ""
    typer.echo(f"{data['status']}: {data['recipient']} {data['message_id']}{reason}", err=True)
    if data["reply_to"] is None:  # not composed (stored `failed`): no address to hand out
        raise typer.Exit(1)
    typer.echo(data["reply_to"])


@cli.command()
def inbox(
    as_json: JsonOpt = False,
    status: Annotated[InboundStatus | None, typer.Option(help="only this status")] = None,
    limit: LimitOpt = 100,
) -> None:
    """List received messages, newest first, with their status and reason."""
    settings = _settings()

    async def work(sessions: Sessions) -> list[dict[str, Any]]:
        async with sessions() as session:
            return await views.inbox(session, status=status, limit=limit)

    for item in _run(settings, work):
        if as_json:
            _print_json(item)
        else:
            sender = ", ".join(a["address"] for a in item["from"]) or item["envelope"]["mail_from"]
            typer.echo(
                f"{item['id']:>6}  {item['status']:<11} {sender:<30} {item['subject'] or ''}"
                + (f"  [{item['reason']}]" if item["reason"] else "")
            )


@cli.command()
def outbox(as_json: JsonOpt = False, limit: LimitOpt = 100) -> None:
    """List outbound messages: held (no relay), queued, sent or failed, with the reason."""
    settings = _settings()

    async def work(sessions: Sessions) -> list[dict[str, Any]]:
        async with sessions() as session:
            return await views.outbox(session, limit=limit)

    for item in _run(settings, work):
        if as_json:
            _print_json(item)
        else:
            typer.echo(
                f"{item['id']:>6}  {item['status']:<7} {item['recipient']:<30} {item['subject']}"
                + (f"  [{item['reason']}]" if item["reason"] else "")
            )


@conversation_cli.command("show")
def conversation_show(key: str, as_json: JsonOpt = False) -> None:
    """Show a conversation with its participants and comments."""
    settings = _settings()

    async def work(sessions: Sessions) -> dict[str, Any] | None:
        async with sessions() as session:
            return await views.conversation(session, key)

    data = _run(settings, work)
    if data is None:
        typer.echo(f"no conversation {key!r}", err=True)
        raise typer.Exit(1)
    if as_json:
        _print_json(data)
        return
    typer.echo(f"{data['key']}: {data['subject']}  (bot: {data['bot']})")
    typer.echo("participants: " + ", ".join(p["email"] for p in data["participants"]))
    for comment in data["comments"]:
        typer.echo(f"\n--- {comment['author']} at {comment['created_at']}\n{comment['body']}")


@cli.command()
def replay(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a saved .eml")],
    to: Annotated[str, typer.Option("--to", help="the envelope recipient")],
    mail_from: Annotated[str | None, typer.Option("--from", help="envelope sender")] = None,
    app: AppOpt = DEFAULT_APP,
    as_json: JsonOpt = False,
) -> None:
    """Run a saved message through the same RCPT policy and pipeline as mail over SMTP."""
    settings = _settings()
    mailbot_app = load_app(app)
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

    data = _run(settings, work)
    if as_json or "refused" in data:
        _print_json(data)
    else:
        typer.echo(
            f"{data['id']} {data['status']}" + (f": {data['reason']}" if data["reason"] else "")
        )
    if "refused" in data:
        raise typer.Exit(1)


@cli.command("eval-strip")
def eval_strip(
    corpus: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="corpora dir")],
    outputs: Annotated[
        Path | None, typer.Option("--outputs", help="write one JSON object per row here")
    ] = None,
    systems: Annotated[
        str, typer.Option(help="comma-separated: mailbot,talon,talon+own-html,...")
    ] = "mailbot,talon,talon+own-html,email-reply-parser,mail-parser-reply",
    worst: Annotated[int, typer.Option(help="how many failing rows to show with a diff")] = 10,
) -> None:
    """Score the strip stage on a reply corpus (shared/corpora format), beside other parsers."""
    from mailbot.evaluate import run_cli

    raise typer.Exit(run_cli(corpus, outputs, systems.split(","), worst))


async def _process_now(
    settings: Settings, app: Mailbot, sessions: Sessions, inbound_id: int
) -> None:
    if not await spool.claim_one(sessions, inbound_id):
        return  # a running server's worker took it first
    async with Analyser(0) as analyser:
        deps = Deps(settings, app, analyser, spam=checker_for(settings))
        await worker.handle(sessions, deps, inbound_id)
    await outbound.deliver_due(sessions, settings)


@quarantine_cli.command("list")
def quarantine_list(as_json: JsonOpt = False, limit: LimitOpt = 100) -> None:
    """List quarantined messages, newest first, with their spam score and top rules."""
    settings = _settings()

    async def work(sessions: Sessions) -> list[dict[str, Any]]:
        async with sessions() as session:
            return await views.inbox(session, status=InboundStatus.quarantined, limit=limit)

    for item in _run(settings, work):
        if as_json:
            _print_json(item)
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
    settings = _settings()
    mailbot_app = load_app(app)

    async def work(sessions: Sessions) -> dict[str, Any] | None:
        await quarantine.release(sessions, inbound_id)
        await _process_now(settings, mailbot_app, sessions, inbound_id)
        async with sessions() as session:
            return await views.inbound_one(session, inbound_id)

    data = _run_or_exit(settings, work)
    if as_json:
        _print_json(data)
    elif data is not None:
        reason = f": {data['reason']}" if data["reason"] else ""
        typer.echo(f"{data['id']} {data['status']}{reason}")


@quarantine_cli.command("delete")
def quarantine_delete(inbound_id: int) -> None:
    """Delete quarantined message ID for good."""
    settings = _settings()

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
    settings = _settings()
    checker = checker_for(settings)
    if checker is None:
        raise ConfigError("MAILBOT_SPAMD is unset: there is no spamd to teach")
    kind: Literal["spam", "ham"] = "spam" if spam is not None else "ham"
    inbound_id = spam if spam is not None else ham
    assert inbound_id is not None

    async def work(sessions: Sessions) -> dict[str, Any]:
        return await quarantine.learn(sessions, checker, inbound_id, kind)

    record = _run_or_exit(settings, work)
    if as_json:
        _print_json({"id": inbound_id, **record})
    else:
        news = "learned" if record["new_to_spamd"] else "already known to spamd"
        typer.echo(f"{inbound_id} taught as {kind}: {news}")


def _run_or_exit(settings: Settings, work: Callable[[Sessions], Awaitable[T]]) -> T:
    """Like _run, with a missing message or an unreachable spamd said in one line."""
    try:
        return _run(settings, work)
    except (LookupError, SpamdUnavailable) as exc:
        typer.echo(f"mailbot: {exc}", err=True)
        raise typer.Exit(1) from exc


def _header_address(raw: bytes, name: str) -> str:
    from mailbot.parse import parse

    value = parse(raw).header(name) or ""
    found = getaddresses([value])
    return found[0][1] if found else ""


def main() -> None:
    try:
        cli()
    except ConfigError as exc:
        typer.echo(f"mailbot: {exc}", err=True)
        sys.exit(2)
