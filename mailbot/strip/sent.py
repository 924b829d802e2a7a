"""Cut a reply where the mail we sent starts being quoted: whatever the client or language.

mailbot knows the exact text of every mail it sent (the outbox). A reply through a reply
address quotes one of them, re-wrapped, ``>``-prefixed, turned from HTML into text, with
link footnotes added, under a header line ("On … wrote:", "Le … a écrit :", an Outlook block)
in any language. Rules must recognise that header; this needs only to find our own words.

How: the sent text's first words (lower-cased word characters, :data:`HEAD_WORDS` of them)
are looked for in the reply's words, ignoring line breaks, quote marks and punctuation; a
place where at least :data:`MIN_MATCH` of them follow in order (a footnote or a re-encoded
link may add or drop a few) is where the quote starts. The lines just above it that read as
its header (ending with a colon, naming an address or a date, an Outlook field block, a
separator line) go with it. Nothing is cut when:

- the sent text has too few words to be recognised (:data:`MIN_WORDS`);
- the person wrote their own lines after the quote (an inline or bottom-posted answer):
  then the rules, which keep such answers, decide.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

HEAD_WORDS = 30
MIN_WORDS = 4
MIN_MATCH = 0.8
HEADER_LINES = 6  # the most lines above the quote taken as its header
MAX_CANDIDATES = 200  # places compared word by word, per sent text: bounded work

_WORD = re.compile(r"\w+")
_SIGNATURE = re.compile(r"^-- ?$", re.MULTILINE)
_QUOTE_MARKS = re.compile(r"^[\s>|]*")
_RULE = re.compile(r"^\s*(-{2,}|_{4,}|={4,}|\*{4,}).*$")
_FIELD = re.compile(r"^\s*[\w][\w .-]{0,24}:\s*\S")  # "From: …", "Envoyé : …", "Von: …"
# "[1] https://…", "<https://…>", a bare link: what clients add below a quote turned to text.
_FOOTNOTE = re.compile(r"^\s*(\[\d+\]:?\s*)?<?(https?://|mailto:)\S*>?\s*$", re.IGNORECASE)
_DATE = re.compile(r"\d{1,4}[-./: ]\d{1,2}")


@dataclass(frozen=True)
class SentCut:
    reply: str
    quote: str
    which: int  # the index of the sent text that was found


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def cut_at_sent(body: str, sent: Sequence[str]) -> SentCut | None:
    """Where the earliest of the ``sent`` texts is quoted in ``body``, split there."""
    lines = body.split("\n")
    positions: list[int] = []  # per word of the body, its line
    flat: list[str] = []
    for number, line in enumerate(lines):
        found = words(_QUOTE_MARKS.sub("", line))
        flat += found
        positions += [number] * len(found)
    best: tuple[int, int] | None = None  # (line, which sent text)
    for which, text in enumerate(sent):
        # Our own signature ("-- " and the footer below it) is left out: some clients drop
        # it from the quote (Thunderbird does by default).
        head = words(_SIGNATURE.split(text, maxsplit=1)[0])[:HEAD_WORDS]
        if len(head) < MIN_WORDS:
            continue
        start = _find(flat, head)
        if start is not None and (best is None or positions[start] < best[0]):
            best = (positions[start], which)
    if best is None:
        return None
    first, which = best
    if _own_text_after(lines[first:], words(sent[which])):
        return None
    top = _header_start(lines, first)
    reply = "\n".join(lines[:top]).rstrip()
    quote = "\n".join(lines[top:]).strip("\n")
    return SentCut(reply, quote, which)


def _find(flat: list[str], head: list[str]) -> int | None:
    """The first index in ``flat`` from which most of ``head`` follows in order.

    Candidates are where one of the head's first three word triples occurs (a client may
    lose a word or two at the start), found in one pass; at most :data:`MAX_CANDIDATES` are
    compared word by word, so a long body of common words costs linear time."""
    need = max(MIN_WORDS, int(len(head) * MIN_MATCH + 0.999))
    window = len(head) + len(head) // 2  # room for footnote numbers and link words
    triples = {tuple(head[i : i + 3]): i for i in range(min(3, len(head) - 2))}
    tried = 0
    for start in range(len(flat) - 2):
        offset = triples.get((flat[start], flat[start + 1], flat[start + 2]))
        if offset is None:
            continue
        tried += 1
        if tried > MAX_CANDIDATES:
            return None
        begin = max(0, start - offset)
        matcher = SequenceMatcher(None, head, flat[begin : begin + window], autojunk=False)
        blocks = [block for block in matcher.get_matching_blocks() if block.size]
        if sum(block.size for block in blocks) >= need:
            return begin + blocks[0].b  # where the matched words begin
    return None


def _own_text_after(after: list[str], sent_words: list[str]) -> bool:
    """Whether, after the quote's start, the person wrote lines of their own: unquoted lines
    of three or more words that are mostly not words of what we sent."""
    known = set(sent_words)
    for line in after:
        if line.lstrip().startswith(">") or _FOOTNOTE.match(line):
            continue
        found = words(line)
        if len(found) >= 3 and sum(w not in known for w in found) > len(found) / 2:
            return True
    return False


def _header_start(lines: list[str], quote: int) -> int:
    """The first line of the quote's header just above line ``quote`` (or ``quote``): the
    shortest run of lines above it that reads as a header, widened over an Outlook block."""
    top = quote
    while top > 0 and not _QUOTE_MARKS.sub("", lines[top - 1]).strip():
        top -= 1  # blank or bare ">" lines between the header and the quote
    block = top
    while block > 0 and top - block < HEADER_LINES and lines[block - 1].strip():
        block -= 1
    clean = [_QUOTE_MARKS.sub("", line).strip() for line in lines]
    for start in range(top - 1, block - 1, -1):
        if _is_header(clean[start:top]):
            while start > block and (
                _FIELD.match(clean[start - 1]) or _RULE.match(clean[start - 1])
            ):
                start -= 1  # the rest of an Outlook block, its separator line
            return start
    return quote


def _is_field_or_rule(line: str) -> bool:
    return bool(_FIELD.match(line) or _RULE.match(line))


def _is_header(block: list[str]) -> bool:
    """An attribution ("… wrote:", in any language: ends with a colon and names a date or
    an address), an Outlook field block, or a separator line."""
    if not block:
        return False
    text = " ".join(block)
    if len(block) >= 2 and all(_is_field_or_rule(line) for line in block):
        return True
    if len(block) == 1 and _RULE.match(block[0]):
        return True
    return text.rstrip().endswith(":") and ("@" in text or bool(_DATE.search(text)))
