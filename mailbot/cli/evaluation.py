"""``mailbot eval-strip``: score the strip stage on a reply corpus; ``mailbot strip-case``:
a regression fixture from a stored message."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


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
    from mailbot.strip.evaluate import run_cli

    raise typer.Exit(run_cli(corpus, outputs, systems.split(","), worst))


def strip_case(
    message: Annotated[str, typer.Argument(help="the stored message: its id, or its Message-ID")],
    expect: Annotated[
        Path, typer.Option("--expect", exists=True, dir_okay=False, help="the reply it should be")
    ],
    out: Annotated[Path, typer.Option("--out", help="where the cases are")] = Path(
        "tests/strip_cases"
    ),
    name: Annotated[str | None, typer.Option(help="the case's folder name")] = None,
) -> None:
    """Write an anonymised regression fixture from a stored message (addresses and names
    replaced) into tests/strip_cases/, which the test suite checks."""
    from mailbot.cli.common import run, settings_from
    from mailbot.parse import parse
    from mailbot.pipeline.analyse import sent_texts
    from mailbot.store import blobs, spool
    from mailbot.strip.cases import make_case, write_case

    settings = settings_from()

    async def work(sessions: Any) -> tuple[int, bytes, list[bytes], list[tuple[str, str]]]:
        inbound_id = await _find(sessions, message)
        raw = await spool.load_raw(sessions, inbound_id, blobs.for_settings(settings))
        return inbound_id, raw, *await _sent_before(sessions, inbound_id)

    try:
        inbound_id, raw, sent, people = run(settings, work, reads_only=True)
    except LookupError as exc:
        typer.echo(f"mailbot: {exc}", err=True)
        raise typer.Exit(1) from exc
    case = make_case(
        parse(raw),
        expect.read_text(encoding="utf-8"),
        name or f"inbound-{inbound_id}",
        tuple(sent_texts(sent)),
        people,
    )
    folder = write_case(case, out, f"mailbot strip-case of inbound message {inbound_id}")
    typer.echo(f"wrote {folder}")


async def _sent_before(sessions: Any, inbound_id: int) -> tuple[list[bytes], list[tuple[str, str]]]:
    """The mails we had sent the person when their reply came (as the server cut it
    against), and the (name, address) of everyone in the conversation (to hide them)."""
    from sqlalchemy import select

    from mailbot.pipeline.sent import sent_to
    from mailbot.store.models import InboundMessage, Participant

    async with sessions() as session:
        row = await session.get(InboundMessage, inbound_id)
        if row is None or row.conversation_id is None:
            return [], []
        people = await session.execute(
            select(Participant.name, Participant.email).where(
                Participant.conversation_id == row.conversation_id
            )
        )
        named = [(name or "", email) for name, email in people]
        if row.participant_id is None:  # mail to a route: nothing was sent to cut against
            return [], named
        # Approximately what the server had: mails made before the reply came that are (still)
        # sent; one that bounced since is left out.
        return await sent_to(session, row.participant_id, before=row.received_at), named


async def _find(sessions: Any, message: str) -> int:
    from sqlalchemy import select

    from mailbot.store.models import InboundMessage

    async with sessions() as session:
        if message.isdigit():
            row = await session.get(InboundMessage, int(message))
        else:
            wanted = message if message.startswith("<") else f"<{message}>"
            query = select(InboundMessage).where(InboundMessage.message_id == wanted).limit(1)
            row = (await session.execute(query)).scalar_one_or_none()
    if row is None:
        raise LookupError(f"no stored message {message}")
    return int(row.id)
