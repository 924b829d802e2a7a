"""An answer keeps the question it answers (issue #14).

A person who answers inline, or below the quote (bottom-posting), writes to the lines they
quote: without those lines their text reads as answers to nothing. :func:`with_answered_quotes`
puts each ``>`` block that the person wrote an answer below back into the reply, as a
Markdown quote (a blank line after it, else Markdown reads the answer as part of the quote).
A block with nothing below it, or only a sign-off or signature, is a trailing quote: history,
left out. The quote itself is kept whole apart either way.
"""

from __future__ import annotations

from mailbot.strip.signatures import opens_signature


def with_answered_quotes(reply: list[str], blocks: list[tuple[int, list[str]]]) -> list[str]:
    """Put back, as Markdown quotes, the ``>`` blocks the person wrote an answer below (not
    only a sign-off or a signature): the answer keeps the question it answers."""
    for position, block in reversed(blocks):
        below = next((line for line in reply[position:] if line.strip()), None)
        if below is None or opens_signature(below):
            continue  # a trailing quote: history, not dialogue
        quoted = [x.strip() if x.lstrip().startswith(">") else "> " + x.strip() for x in block]
        while quoted and quoted[-1] in ("", ">", "> "):
            quoted.pop()
        while quoted and quoted[0] in ("", ">", "> "):
            quoted.pop(0)
        if not quoted:
            continue
        after = reply[position:]
        while after and not after[0].strip():
            after.pop(0)
        # A blank line after the quote, else Markdown reads the answer as part of it.
        before = reply[:position]
        marked = [">" if not x.strip() else x for x in quoted]
        reply = before + ([""] if before else []) + marked + [""] + after
    return reply
