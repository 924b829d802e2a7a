"""``mailbot dkim keygen`` and ``mailbot dkim check``: the key that signs what we send."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mailbot.addresses import domain_of
from mailbot.cli.common import settings_from
from mailbot.outbound import signing
from mailbot.trust.resolver import DnsTempError, resolver_for

dkim_cli = typer.Typer(no_args_is_help=True, help="DKIM: sign what mailbot sends.")


@dkim_cli.command("keygen")
def keygen(
    selector: Annotated[str, typer.Option(help="the selector: the DNS name's first label")],
    algorithm: Annotated[str, typer.Option(help="rsa (2048 bits) or ed25519")] = "rsa",
    out: Annotated[
        Path | None, typer.Option(help="where to write the key [default: data dir/dkim/]")
    ] = None,
    force: Annotated[bool, typer.Option(help="replace a key file that exists")] = False,
) -> None:
    """Make a signing key (kept 0600), print the DNS record to publish and the settings.

    Example: mailbot dkim keygen --selector mb2026
    """
    settings = settings_from(dkim_selector=selector)  # checks the selector's form
    if algorithm not in ("rsa", "ed25519"):
        raise typer.BadParameter("rsa or ed25519", param_hint="--algorithm")
    path = out or settings.home_dir / "dkim" / f"{selector}.key"
    if path.exists() and not force:
        typer.echo(f"mailbot: {path} exists; --force replaces it", err=True)
        raise typer.Exit(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(signing.new_key(algorithm))
    domain = settings.dkim_domain or domain_of(settings.from_address)
    key = signing.read_key(path, selector, domain)
    typer.echo(f"wrote {path}")
    typer.echo(f'publish:  {signing.record_name(key)}.  TXT  "{signing.public_record(key)}"')
    typer.echo(f"then set: MAILBOT_DKIM_KEY={path.resolve()} MAILBOT_DKIM_SELECTOR={selector}")


@dkim_cli.command("check")
def check() -> None:
    """Say whether the DNS record of the configured key (MAILBOT_DKIM_KEY,
    MAILBOT_DKIM_SELECTOR) is published and matches it; exit 1 if not."""
    settings = settings_from()
    key = signing.key_for(settings)
    if key is None:
        typer.echo("mailbot: no DKIM key is configured (MAILBOT_DKIM_KEY)", err=True)
        raise typer.Exit(1)
    name, wanted = signing.record_name(key), signing.public_record(key)
    try:
        found = resolver_for(settings).lookup(name, "TXT")
    except DnsTempError as exc:
        typer.echo(f"{name}: DNS did not answer ({exc}); try again", err=True)
        raise typer.Exit(1) from None
    published = [_fields(text) for text in found if "p=" in text]
    if _fields(wanted) in published:
        typer.echo(f"{name}: the published record matches the key")
        return
    typer.echo(f"{name}: " + ("does not match the key" if published else "no DKIM record"))
    typer.echo(f'publish:  {name}.  TXT  "{wanted}"')
    raise typer.Exit(1)


def _fields(record: str) -> tuple[str, str]:
    """(k, p) of a DKIM record, spaces and quotes as DNS tools print them ignored."""
    tags = {}
    for part in record.replace('"', "").split(";"):
        name, _, value = part.partition("=")
        tags[name.strip().lower()] = "".join(value.split())
    return tags.get("k", "rsa"), tags.get("p", "")
