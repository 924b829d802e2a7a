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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from mailbot.strip import quotes

HEAD_WORDS = 30
MIN_WORDS = 4
MIN_MATCH = 0.8
HEADER_LINES = 6  # the most lines above the quote taken as its header
MAX_CANDIDATES = 200  # places compared word by word, per sent text: bounded work

_WORD = re.compile(r"\w+")
_SIGNATURE = re.compile(r"^-- ?$", re.MULTILINE)
_QUOTE_MARKS = re.compile(r"^[\s>|]*")
_RULE = re.compile(r"^\s*(-{4,}|_{4,}|={4,}|\*{4,})\s*$|^\s*-{3,}[^-]{1,40}-{3,}\s*$")
# "From: …", "Envoyé : …", "Von: …", Outlook on the web's bold "*From:* …"
_FIELD = re.compile(r"^\s*\*?\w[\w .-]{0,24}\*?:\*?\s*\S")
# "[1] https://…", "<https://…>", a bare link: what clients add below a quote turned to text.
_FOOTNOTE = re.compile(r"^\s*(\[\d+\]:?\s*)?<?(https?://|mailto:)\S*>?\s*$", re.IGNORECASE)
_DATE = re.compile(r"\d{1,4}[-./: ]\d{1,2}")


@dataclass(frozen=True)
class SentCut:
    reply: str
    quote: str
    which: int  # the index of the sent text that was found
    line: int = 0  # the body's line where the quote (its header) starts


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
    marked = [_is_marked(line) for line in lines]
    last_marked = max((i for i, m in enumerate(marked) if m), default=-1)
    best: tuple[int, int] | None = None  # (line, which sent text)
    for which, text in enumerate(sent):
        # Our own signature ("-- " and the footer below it) is left out: some clients drop
        # it from the quote (Thunderbird does by default).
        head = words(_SIGNATURE.split(text, maxsplit=1)[0])[:HEAD_WORDS]
        if len(head) < MIN_WORDS:
            continue
        for start in _matches(flat, head):
            at = positions[start]
            if not marked[at] and at < last_marked:
                continue  # unmarked words of ours with a ">" quote below: the person's own
            if best is None or at < best[0]:
                best = (at, which)
            break
    if best is None:
        return None
    first, which = best
    if _own_text_after(lines[first:], words(sent[which]), marked=marked[first]):
        return None
    top = _header_start(lines, first)
    reply = "\n".join(lines[:top]).rstrip()
    quote = "\n".join(lines[top:]).strip("\n")
    return SentCut(reply, quote, which, top)


def _is_marked(line: str) -> bool:
    return line.lstrip().startswith(">")


def _matches(flat: list[str], head: list[str]) -> Iterator[int]:
    """Indexes in ``flat`` from which most of ``head`` follows in order, first to last.

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
            return
        begin = max(0, start - offset)
        matcher = SequenceMatcher(None, head, flat[begin : begin + window], autojunk=False)
        blocks = [block for block in matcher.get_matching_blocks() if block.size]
        if sum(block.size for block in blocks) >= need:
            yield begin + blocks[0].b  # where the matched words begin


def _own_text_after(after: list[str], sent_words: list[str], *, marked: bool) -> bool:
    """Whether, after the quote's start, the person wrote lines of their own. Below a ">"
    quote, any unmarked line is theirs ("Fixed now."); below an unmarked (Outlook-style)
    one, lines of three or more words that are mostly not words of what we sent."""
    known = set(sent_words)
    for line in after[1:]:
        if not line.strip() or _is_marked(line) or _FOOTNOTE.match(line):
            continue
        if marked:
            return True
        found = words(line)
        if len(found) >= 3 and sum(w not in known for w in found) > len(found) / 2:
            return True
    return False


def _header_start(lines: list[str], quote: int) -> int:
    """The first line of the quote's header just above line ``quote`` (or ``quote``): a
    header the rules know (mailbot/strip/quotes.py), or, in a language they do not, an
    attribution naming both an address and a date, or a field block naming an address."""
    top = quote
    while top > 0 and not _QUOTE_MARKS.sub("", lines[top - 1]).strip():
        top -= 1  # blank or bare ">" lines between the header and the quote
    block = top
    while block > 0 and top - block < HEADER_LINES and lines[block - 1].strip():
        block -= 1
    clean = [_QUOTE_MARKS.sub("", line).strip() for line in lines]
    for start in range(top - 1, block - 1, -1):
        known = quotes.header_size(clean, start)
        rest = clean[start + known : top]
        if (known and all(_FIELD.match(line) for line in rest)) or _is_header(clean[start:top]):
            fields = all(_FIELD.match(line) or _RULE.match(line) for line in clean[start:top])
            while start > block and (
                _RULE.match(clean[start - 1]) or (fields and _FIELD.match(clean[start - 1]))
            ):
                start -= 1  # the rest of an Outlook block, the separator line above it
            return start
    return quote


def _is_header(block: list[str]) -> bool:
    """In a language the rules do not know: an attribution ending with a colon that names
    an address and a date or time, or a block of two or more "Field: value" lines (or a
    separator and such lines) that names an address."""
    text = " ".join(block)
    if "@" not in text:
        return False
    if len(block) >= 2 and all(_FIELD.match(line) or _RULE.match(line) for line in block):
        return True
    return text.rstrip().endswith((":", "：")) and bool(_DATE.search(text))
