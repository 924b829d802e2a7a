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
    only a sign-off or a signature): the answer keeps the question it answers. ``blocks``
    are (where in ``reply`` the block sat, its lines), in order. One pass: linear time."""
    if not blocks:
        return reply
    below: list[str | None] = [None] * (len(reply) + 1)  # first line with text from here on
    for i in range(len(reply) - 1, -1, -1):
        below[i] = reply[i] if reply[i].strip() else below[i + 1]
    at: dict[int, list[list[str]]] = {}
    for position, block in blocks:
        at.setdefault(position, []).append(block)
    out: list[str] = []
    skip_blanks = False
    for i in range(len(reply) + 1):
        here = at.get(i, [])
        after = below[i] if here else None
        for block in here if after is not None and not opens_signature(after) else []:
            quoted = _markdown(block)
            if quoted:
                while out and not out[-1].strip():
                    out.pop()
                # A blank line after the quote, else Markdown reads the answer as part of it.
                out += ([""] if out else []) + quoted + [""]
                skip_blanks = True
        if i == len(reply):
            break
        if skip_blanks and not reply[i].strip():
            continue
        skip_blanks = False
        out.append(reply[i])
    return out


def _markdown(block: list[str]) -> list[str]:
    """A ``>`` block as Markdown quote lines; a line the client wrapped without its ``>``
    gets one; no blank quote lines at either end."""
    quoted = [x.strip() if x.lstrip().startswith(">") else "> " + x.strip() for x in block]
    while quoted and quoted[-1] in ("", ">", "> "):
        quoted.pop()
    while quoted and quoted[0] in ("", ">", "> "):
        quoted.pop(0)
    return [">" if not x.strip() else x for x in quoted]
