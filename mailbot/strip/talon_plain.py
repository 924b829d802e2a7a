"""talon's ``extract_from_plain``, with its line marking made cheap where it can find nothing.

talon marks each line of a body before it cuts: ``e`` empty, ``m`` a ``>`` line, ``f`` a
forward line, ``s`` a line where a quote header (a "splitter") starts, ``t`` text. To find
``s`` it tries its ten splitter patterns on every text line with the five lines below it:
about 20 µs a line, the most of talon's time on a long body. Every one of those patterns
needs, within the lines it matches, an ``@``, a colon near the start of a line (after
spaces), a character outside ASCII, or one of a few words (:data:`_HINTS`). A window of
lines holding none of them cannot start a splitter, so talon's patterns are not tried there.
Everything else (its pre- and post-processing, how it cuts from the marks) is talon's own
code, called as talon calls it; tests/test_strip_talon.py checks the marks against talon's
own on the corpora and on generated text.
"""

from __future__ import annotations

# The words talon's splitter patterns look for (in any case), ASCII ones only: a line
# outside ASCII is always tried.
_HINTS = (
    "wrote", "sent", "message", "nachricht", "meddelelse", "schreef", "verzond",
    "geschreven", "schrieb", "skrev", "samsung", "mailto",
)  # fmt: skip
_FIELD = 12  # "From:", "*Skickat:*", ":Datum :" …: the colon is this near the line's start


def extract_from_plain(body: str) -> str:
    """What ``talon.quotations.extract_from_plain(body)`` returns, sooner on long bodies."""
    from talon import quotations
    from talon.utils import get_delimiter

    delimiter = get_delimiter(body)
    body = quotations.preprocess(body, delimiter)
    lines = body.splitlines()[: quotations.MAX_LINES_COUNT]
    markers = mark_lines(lines)
    # A fresh flags list: talon's default argument is one shared, mutable list.
    kept = quotations.process_marked_lines(lines, markers, [False, -1, -1])
    return str(quotations.postprocess(delimiter.join(kept)))


def mark_lines(lines: list[str]) -> str:
    """The marks ``talon.quotations.mark_message_lines(lines)`` gives."""
    from talon import quotations

    span = quotations.SPLITTER_MAX_LINES
    # hinted_from[i]: the first line at or after i that could be part of a splitter (past
    # the end: none, however near the end i is).
    none = len(lines) + span
    hinted_from = [none] * (len(lines) + 1)
    for i in range(len(lines) - 1, -1, -1):
        hinted_from[i] = i if _may_split(lines[i]) else hinted_from[i + 1]
    markers = ["e"] * len(lines)
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            markers[i] = "e"
        elif quotations.QUOT_PATTERN.match(line):
            markers[i] = "m"
        elif quotations.RE_FWD.match(line):
            markers[i] = "f"
        elif hinted_from[i] < i + span and (
            splitter := quotations.is_splitter("\n".join(lines[i : i + span]))
        ):
            count = len(splitter.group().splitlines())
            for j in range(count):
                markers[i + j] = "s"
            i += count - 1
        else:
            markers[i] = "t"
        i += 1
    return "".join(markers)


def _may_split(line: str) -> bool:
    if not line.isascii():
        return True  # case folding outside ASCII (ſ, K) is talon's regex engine's business
    low = line.lower()
    return "@" in low or ":" in low.lstrip()[:_FIELD] or any(hint in low for hint in _HINTS)
