"""``mailbot eval-strip``: score the strip stage on a reply corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
