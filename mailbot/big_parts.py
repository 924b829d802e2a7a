"""Big attachments stay where they are in the raw bytes while the parser reads the rest.

Python's feed parser keeps every line of a part as a string of its own and then joins
them: a 25 MiB attachment cost the analyser 70 MiB over the message itself, enough to
break the node's bound of three times a message's size. So the parser gets a skeleton:
each big leaf body (where :func:`mailbot.screen.big_leaves` finds it, the way the parser
would) replaced by a marker with a random nonce. The parts whose payload is exactly their
marker get ``body``: a view of their bytes in the raw message, which
:func:`mailbot.parse._payload` decodes straight from there.

If the parser saw the structure differently from the scan (a marker anywhere but alone in
a non-text leaf, or missing), the skeleton is thrown away and the message read whole, as
before: the answer never depends on the shortcut.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from email.message import Message

from mailbot.screen import Limits, big_leaves

# Smaller bodies are read as they are: the shortcut is for the memory of big mail only.
MIN_SIZE = 64 * 1024


def tree(raw: bytes, limits: Limits, feed: Callable[[bytes], Message]) -> Message:
    """``feed(raw)``'s tree, with big leaf bodies read in place (their ``body``)."""
    leaves = big_leaves(raw, limits, MIN_SIZE) if len(raw) >= MIN_SIZE else []
    if not leaves:
        return feed(raw)
    prefix = f"mailbot-elided-{secrets.token_hex(8)}-"
    marks: dict[str, tuple[int, int]] = {}
    pieces: list[bytes] = []
    last = 0
    for n, (start, end) in enumerate(leaves):
        mark = f"{prefix}{n}"
        marks[mark] = (start, end)
        pieces += [raw[last:start], mark.encode("ascii")]
        last = end
    pieces.append(raw[last:])
    msg = feed(b"".join(pieces))
    if _restore(msg, memoryview(raw), marks, prefix):
        return msg
    return feed(raw)


def body(part: Message) -> memoryview | None:
    """The encoded body of a part read in place, or None."""
    found: memoryview | None = getattr(part, "_mailbot_body", None)
    return found


def _restore(msg: Message, raw: memoryview, marks: dict[str, tuple[int, int]], prefix: str) -> bool:
    found = 0
    for part in msg.walk():
        payload = getattr(part, "_payload", None)
        if not isinstance(payload, str) or prefix not in payload:
            continue
        if payload not in marks or part.get_content_maintype() in ("text", "message"):
            return False
        if "uu" in str(part.get("content-transfer-encoding", "")).lower():
            return False  # uuencode is decoded by the email package, from its own payload
        start, end = marks[payload]
        part._mailbot_body = raw[start:end]  # type: ignore[attr-defined]
        found += 1
    return found == len(marks)
