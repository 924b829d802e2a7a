"""Where the quoted history starts in a plain-text reply, and which answers sit inside it.

A quote starts at the first of:

- an attribution line, "On <date>, <name> wrote:" in the languages people mail in (English,
  German, French, Spanish, Catalan, Portuguese, Italian, Dutch, Swedish, Danish, Norwegian,
  Finnish, Polish, Czech, Hungarian, Romanian, Russian, Ukrainian, Greek, Turkish, Hebrew,
  Arabic, Chinese, Japanese, Korean, Thai, Vietnamese, Indonesian; right-to-left direction
  marks ignored), also when the sender's client
  broke it in two ("... <\\naddress> wrote:"), and Gmail's "2014-03-20 8:48 GMT+01:00 Name
  <address>:";
- an Outlook header block: "From:" and at least one more of "Sent:", "To:", "Subject:",
  "Date:" (and their translations) on the following lines, bold (``*From:*``) or not;
- a separator: "-----Original Message-----" and translations, or a rule of ``_``/``-``/``=``
  right before a header block or date line;
- a ``>`` quoted line.

What follows a header with ``>`` lines is quoted only as far as the ``>`` lines go: text after
them is the person answering inline or below the quote and is kept, with the lines it answers
(:mod:`mailbot.strip.dialogue`). What follows a header without ``>`` (Outlook's style) is quote
to the end. A forward below the person's text is kept apart, as the quote; a forward alone is
content. A header block at the very top is a pasted header: dropped, and the reading goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailbot.strip.dialogue import with_answered_quotes
from mailbot.strip.quote_headers import (
    FORWARD,
    OPENER,
    attribution_inside,
    header_kind,
    header_size,
    is_attribution,
    is_quoted,
    may_start_quote,
    skip_leading_header,
)
from mailbot.strip.signatures import is_signoff

__all__ = ["FORWARD", "Split", "attribution_inside", "header_size", "is_attribution", "split_quote"]


@dataclass(frozen=True)
class Split:
    reply: str
    quote: str | None
    found: bool  # whether any quote marker was seen (else a caller may ask another splitter)
    rule: str | None = None  # the first marker that cut, in words (the page shows it)
    rule_id: str | None = None  # the same as a short name: "header:attribution", "quote:>", …
    line: int | None = None  # the line of the body where that marker is


def split_quote(body: str) -> Split:
    lines = body.split("\n")
    reply: list[str] = []
    quote: list[str] = []
    i = skip_leading_header(lines)
    quote.extend(lines[:i])
    found = i > 0
    rule: str | None = "a header block at the top" if found else None
    rule_id: str | None = "header:top" if found else None
    at: int | None = 0 if found else None
    first_block: int | None = None  # len(reply) when the first ">" block began
    # ">" blocks, each with the length of the reply where it sat: one the person answered
    # below goes back into the reply as a Markdown quote, so the answer keeps its question.
    blocks: list[tuple[int, list[str]]] = []
    ends: dict[int, bool] = {}  # lines below known to end like an attribution, or not
    while i < len(lines):
        line = lines[i]
        if not may_start_quote(lines, i, ends):  # most lines: no rule below can fire on them
            reply.append(line)
            i += 1
            continue
        if FORWARD.match(line):
            found = True
            if any(x.strip() for x in reply):
                # A forward inside a reply: the text above is the reply, the forward apart.
                rule, rule_id, at = rule or "a forwarded message", rule_id or "forward", i
                if first_block is None:
                    first_block = len(reply)
                quote.extend(lines[i:])
            else:
                rule = rule or "a forwarded message (kept as content)"
                reply.extend(lines[i:])  # a forward alone is content: keep it whole
            break
        inside = None if OPENER.match(line) or is_quoted(line) else attribution_inside(line)
        size = 0 if inside is not None else header_size(lines, i)
        if inside is not None:
            # "reply text On <date>, Bob wrote:" on one line: keep the text, cut the rest.
            reply.append(line[:inside].rstrip(" -"))
            lines = lines[:i] + [line[inside:]] + lines[i + 1 :]
            size = 1
        if size:
            found = True
            if rule is None:
                rule = f"the attribution line {line.strip()[:80]!r}"
                rule_id = "header:inline" if inside is not None else header_kind(lines, i)
                at = i
            j = i + size
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and is_quoted(lines[j]):
                # "On ... wrote:" then ">" lines: the quote ends where the ">" lines end.
                k = _quote_end(lines, j)
                quote.extend(lines[i:k])
                # A header and its quote between two paragraphs leave a paragraph break.
                apart = bool(reply) and not reply[-1].strip() and not lines[k - 1].strip()
                _drop_trailing_blank(reply)
                first_block = len(reply) if first_block is None else first_block
                blocks.append((len(reply), lines[j:k]))
                if apart and k < len(lines):
                    reply.append("")
                i = k
                continue
            signed = any(
                x.rstrip() in ("--", "-- ") or is_signoff(x) for x in reply[first_block or 0 :]
            )
            if first_block is not None and not signed:
                # Unquoted history after a quote: the text between was history too, unless
                # the person signed it (a sign-off, "--"): then it was their inline answer.
                quote.extend(reply[first_block:])
                del reply[first_block:]
            quote.extend(lines[i:])  # Outlook style: history to the end, unquoted
            break
        if is_quoted(line):
            found = True
            if rule is None:
                rule, rule_id, at = "lines quoted with '>'", "quote:>", i
            k = _quote_end(lines, i)
            quote.extend(lines[i:k])
            _drop_trailing_blank(reply)
            first_block = len(reply) if first_block is None else first_block
            blocks.append((len(reply), lines[i:k]))
            i = k
            continue
        reply.append(line)
        i += 1
    reply = with_answered_quotes(reply, blocks)
    text = "\n".join(reply).strip("\n")
    rest = "\n".join(quote).strip("\n")
    return Split(text, rest, found, rule, rule_id, at) if rest else Split(text, None, found)


def _quote_end(lines: list[str], i: int) -> int:
    """Where the ``>`` block starting at ``i`` ends. A line the sender's client wrapped
    without its ``>``, between two quoted lines, still belongs to the quote."""
    k = i
    while k < len(lines):
        line = lines[k]
        if is_quoted(line) or not line.strip():
            k += 1
        elif (
            k > i
            and is_quoted(lines[k - 1])
            and (lines[k - 1].strip() != ">" or line.rstrip().endswith(">"))
            and k + 1 < len(lines)
            and is_quoted(lines[k + 1])
        ):
            k += 1
        else:
            break
    return k


def _drop_trailing_blank(lines: list[str]) -> None:
    while lines and not lines[-1].strip():
        lines.pop()
