"""``mailbot serve`` and ``mailbot smtp-password``: run the server, let a submitter in."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mailbot import logs
from mailbot.app import load_app
from mailbot.cli.common import DEFAULT_APP, AppOpt, settings_from
from mailbot.config import Settings
from mailbot.errors import ConfigError

if TYPE_CHECKING:
    from mailbot.app import Mailbot
    from mailbot.pipeline.child import WorkerChild

log = logging.getLogger(__name__)


class Role(StrEnum):
    """What a node runs. On PostgreSQL any mix, on any number of nodes; on SQLite one
    process owns the file, so it runs them all."""

    smtp = "smtp"  # receive: store, then 250 (and wake the workers)
    worker = "worker"  # the pipeline, the outbox sender, the spamd rescan
    web = "web"  # the health page and the JSON API
    all = "all"


def parts_for(roles: list[Role] | None, settings: Settings) -> dict[str, bool]:
    """``running()``'s switches for ``--role`` (given once or more; none means all)."""
    chosen = set(roles or [Role.all])
    if Role.all in chosen:
        chosen = {Role.smtp, Role.worker, Role.web}
    if settings.is_sqlite and chosen != {Role.smtp, Role.worker, Role.web}:
        # A node takes back what was in flight at its start (store/spool.py, recover): on a
        # shared SQLite file that would be another process's work, acted on twice.
        raise ConfigError(
            "--role " + " --role ".join(sorted(r.value for r in chosen)) + " needs "
            "PostgreSQL (MAILBOT_DATABASE_URL=postgresql+asyncpg://...): on SQLite one "
            "process owns the database and runs every part (--role all)"
        )
    return {
        "smtp": Role.smtp in chosen,
        "work": Role.worker in chosen,
        "http": Role.web in chosen,
    }


def _setting(name: str, what: str = "", *, shown: str | None = None) -> typer.models.OptionInfo:
    """A flag that overrides one setting: its help names the variable and the real default
    (typer would print "[default: None]", the flag's own)."""
    default = Settings.model_fields[name].default
    said = shown if shown is not None else ("none" if default is None else str(default))
    words = f"{what}; " if what else ""
    option: typer.models.OptionInfo = typer.Option(
        help=f"{words}MAILBOT_{name.upper()}  [default: {said}]", show_default=False
    )
    return option


def serve(
    app: AppOpt = DEFAULT_APP,
    role: Annotated[
        list[Role] | None,
        typer.Option(
            help="what this node runs; repeat for several (--role smtp --role web); "
            "roles other than all need PostgreSQL  [default: all]",
            show_default=False,
        ),
    ] = None,
    domain: Annotated[str | None, _setting("domain", "domain we receive for")] = None,
    smtp_host: Annotated[str | None, _setting("smtp_host")] = None,
    smtp_port: Annotated[int | None, _setting("smtp_port")] = None,
    http_host: Annotated[str | None, _setting("http_host")] = None,
    http_port: Annotated[int | None, _setting("http_port")] = None,
    database_url: Annotated[
        str | None, _setting("database_url", shown="mailbot.db in MAILBOT_HOME")
    ] = None,
    relay: Annotated[
        str | None,
        _setting("relay", "smtp://host:port for outbound mail", shown="none: mail is held"),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        _setting(
            "tls_cert",
            "PEM certificate (chain) for STARTTLS and --smtps-port",
            shown="a self-signed pair in MAILBOT_HOME",
        ),
    ] = None,
    tls_key: Annotated[Path | None, _setting("tls_key", "PEM private key of --tls-cert")] = None,
    smtps_port: Annotated[
        int | None, _setting("smtps_port", "implicit-TLS port, e.g. 465", shown="off")
    ] = None,
    require_starttls: Annotated[
        bool | None, _setting("require_starttls", "refuse MAIL before STARTTLS (not a public MX)")
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
    """Run SMTP, worker, outbox and HTTP in one process until Ctrl-C (or, with --role,
    only some of them: several nodes share one PostgreSQL database, see the README).

    Without --tls-cert/--tls-key, STARTTLS uses a self-signed pair made on the first start
    and kept in MAILBOT_HOME (see mailbot/smtp/tls.py). The HTTP API refuses to start on a
    non-loopback --http-host without --api-token (or --insecure-no-auth)."""
    settings = settings_from(
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
    logs.configure(settings.log_level, settings.log_format)
    parts = parts_for(role, settings)
    asyncio.run(serve_forever(settings, load_app(app, settings), **parts, app_spec=app))


def smtp_password(
    name: Annotated[str, typer.Argument(help="the submitter's login name")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
) -> None:
    """Print a [smtp_users] line for mailbot.toml: NAME may then use SMTP AUTH (over TLS).

    Only the scrypt hash is printed; the password itself is stored nowhere."""
    from mailbot.smtp.submitters import hash_password

    typer.echo(f"{json.dumps(name)} = {json.dumps(hash_password(password))}")


async def serve_forever(
    settings: Settings,
    app: Mailbot,
    *,
    smtp: bool = True,
    work: bool = True,
    http: bool = True,
    app_spec: str | None = None,
) -> None:
    """``mailbot serve``: run until SIGINT or SIGTERM, then stop every part cleanly; only
    the parts asked for (``--role``, mailbot/cli/serving.py). With ``app_spec``
    to start it from, the worker runs in a child process (mailbot/pipeline/child.py)."""
    import signal

    from mailbot.pipeline.child import WorkerChild
    from mailbot.serve import running

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    split = bool(app_spec) and smtp and work and settings.worker_process
    async with contextlib.AsyncExitStack() as stack:
        node = await stack.enter_async_context(
            running(settings, app, smtp=smtp, work=work and not split, http=http)
        )
        if split:
            assert app_spec is not None
            # What the child finished shows on this node's live inbox at once.
            worked = node.feed.stored if node.feed is not None else lambda: None
            child = await stack.enter_async_context(WorkerChild(settings, app_spec, worked))
            forwarding = asyncio.create_task(forward_wakes(node.wake_worker, child))
            stack.push_async_callback(_cancelled, forwarding)
        parts = [
            *([f"SMTP {settings.smtp_host}:{node.smtp_port}"] if smtp else []),
            *(["worker and outbox" + (" (a child process)" if split else "")] if work else []),
            *([f"HTTP http://{settings.http_host}:{node.http_port}"] if http else []),
        ]
        log.info(
            "mailbot serving %s: %s, database %s",
            settings.domain,
            ", ".join(parts),
            node.engine.url.render_as_string(hide_password=True),
        )
        await stop.wait()
        log.info("stopping")


async def forward_wakes(stored: asyncio.Event, child: WorkerChild) -> None:
    """The SMTP server wakes this node's worker event; the worker is in the child."""
    while True:
        await stored.wait()
        stored.clear()
        child.wake()


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
