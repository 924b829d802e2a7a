"""mailbot/big_parts.py: big attachments are read in place, and the answer is the same.

The shortcut must never change what a message parses to: over thousands of made-up hostile
messages (mailbot/testing/hostile.py) and the shared corpora, with the size from which a
body is left in place set so low that nearly every non-text leaf is, ``parse()`` and the
attachments' bytes are exactly what the whole-message reading gives. A skeleton the parser
reads differently from the scan is thrown away. And it does what it is for: a 25 MiB
attachment costs the parser almost nothing beyond the message itself.
"""

from __future__ import annotations

import base64
import os
import random
import re
import tracemalloc
from pathlib import Path

import pytest

from mailbot import big_parts, parse
from mailbot.screen import Limits
from mailbot.store.attachments import _attachment_bytes
from mailbot.testing.hostile import corpus_messages, hostile_mail

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
MiB = 1024 * 1024


# The email package invents a random boundary when it writes out an attached multipart that
# has none it can read; the same message then gives other bytes each time, with or without
# the shortcut.
_INVENTED = re.compile(rb"={15}\d+==")


def _whole(raw: bytes) -> tuple[dict[str, object], list[bytes]]:
    attachments = [_INVENTED.sub(b"(invented)", a) for a in _attachment_bytes(raw, Limits())]
    return parse.parse(raw).to_json(), attachments


def _with(monkeypatch: pytest.MonkeyPatch, raw: bytes, min_size: int) -> tuple[object, object]:
    with monkeypatch.context() as patch:
        patch.setattr(big_parts, "MIN_SIZE", min_size)
        return _whole(raw)


def test_in_place_and_whole_readings_agree_on_hostile_mail(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20261127)
    corpus = corpus_messages(CORPORA) if CORPORA.is_dir() else []
    used = 0
    for _ in range(1500):
        raw = hostile_mail(rng, corpus, max_size=256 * 1024)
        with monkeypatch.context() as patch:
            patch.setattr(big_parts, "MIN_SIZE", 1)
            try:
                tree = parse._tree(raw, Limits())
            except parse._Refused:  # over a limit: parse() notes it, nothing is read
                tree = None
        if tree is not None and any(big_parts.body(part) is not None for part in tree.walk()):
            used += 1  # read in place, not thrown away for the whole reading
        assert _with(monkeypatch, raw, 1) == _with(monkeypatch, raw, 1 << 60), raw[:300]
    assert used > 50  # the shortcut was really taken, not skipped


def test_a_skeleton_the_parser_reads_differently_is_thrown_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payload = base64.encodebytes(os.urandom(100_000))
    raw = (
        b'From: a@example.com\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + payload.replace(b"\n", b"\r\n")
        + b"--b--\r\n"
    )
    whole = _with(monkeypatch, raw, 1 << 60)
    start = raw.index(b"hello")
    # A scan that is wrong about where a body lies: the text part's body and its boundary.
    monkeypatch.setattr(big_parts, "big_leaves", lambda *_a: [(start, start + 40)])
    assert _whole(raw) == whole


def test_a_25_mib_attachment_costs_the_parser_no_copy_of_it() -> None:
    data = os.urandom(19 * MiB)
    raw = (
        b'From: a@example.com\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nThe report.\r\n"
        b"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="r.pdf"\r\n\r\n'
        + base64.encodebytes(data).replace(b"\n", b"\r\n")
        + b"--b--\r\n"
    )
    tracemalloc.start()
    try:
        tree = parse._tree(raw, Limits())
        held = tracemalloc.get_traced_memory()[1]
        (part,) = [p for p in tree.walk() if p.get_content_type() == "application/pdf"]
        assert parse._payload(part, {}) == data
    finally:
        tracemalloc.stop()
    assert held < MiB  # the whole-message reading holds about 70 MiB here
    parsed = parse.parse(raw)
    assert parsed.text == "The report." and parsed.attachments[0].size == len(data)
