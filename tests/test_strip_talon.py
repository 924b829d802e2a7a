"""mailbot/strip/talon_plain.py marks lines exactly as talon does, and cuts as talon cuts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from talon import quotations

from mailbot.strip import talon_plain
from mailbot.strip.evaluate import load_corpus
from mailbot.strip.reply import html_to_text, load_signature_model

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"

# Lines in the shapes talon's splitters look for, and some that only look close.
LINES = [
    "On Mon, 1 Jan 2024 at 10:00, Bob <bob@example.com> wrote:",
    "On Mon, 1 Jan 2024 at 10:00, Bob Smith",
    "<bob@example.com> wrote:",
    "Le lun. 1 janv. 2024 à 10:00, Bob a écrit :",
    "Am 01.01.2024 um 10:00 schrieb Bob:",
    "Op 1 jan. 2024 om 10:00 heeft Bob het volgende geschreven:",
    "W dniu 1.01.2024 o 10:00, Bob pisze, użytkownik napisał:",
    "From: Bob <bob@example.com>",
    " *From:* Bob",
    "Från: Bob",
    "Envoyé : lundi",
    "Skickat: den 1 januari",
    "________________________________",
    "-----Original Message-----",
    "----- Ursprüngliche Nachricht -----",
    "---------- Forwarded message ---------",
    "-------- Bob wrote --------",
    "2024-01-01 10:00 GMT+01:00 Bob <bob@example.com>:",
    "01/01/2024 Bob @ home",
    "Mon, 1 Jan 2024, 10:00 Bob Smith the Third <bob@example.com>:",
    "Sent from Samsung Mobile <a@b> wrote",
    "Sent from my iPhone",
    "On Jan 1 Bob  < mailto:bob@example.com > wrote:",
    "> quoted line",
    ">> deeper",
    "",
    "   ",
    "Thanks, see you at 10:30.",
    "A plain line of the reply with a link http://x.org and more words.",
    "Meſſage with a long s, Original Meſſage",
    "-----ORIGINAL MESSAGE-----",
    "Date: today",
    "Datum: heute",
    "De : Bob",
    "Line 7",
    "Item 3 | 3",
    "<http://example.com/a>",
    "text <http://example.com/b> more",
]


def _same_marks(lines: list[str]) -> None:
    assert talon_plain.mark_lines(lines) == quotations.mark_message_lines(lines)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.sampled_from(LINES) | st.text(max_size=60), max_size=30))
def test_the_marks_are_talons_on_generated_lines(lines: list[str]) -> None:
    lines = [piece for line in lines for piece in line.splitlines() or [""]]
    _same_marks(lines)
    body = "\n".join(lines)
    assert talon_plain.extract_from_plain(body) == quotations.extract_from_plain(body)


def test_a_splitter_a_few_lines_below_a_plain_line_is_still_found() -> None:
    # The window starting at a plain line reaches the header lines below it.
    lines = ["Thanks!", "", "On Mon, 1 Jan 2024 at 10:00, Bob Smith", "<bob@example.com> wrote:"]
    lines += ["> hi"] * 3
    marks = talon_plain.mark_lines(lines)
    assert marks == quotations.mark_message_lines(lines)
    assert "s" in marks
    assert talon_plain.extract_from_plain("\n".join(lines)) == "Thanks!"


def test_the_marks_are_talons_on_every_corpus_body() -> None:
    if not CORPORA.is_dir():
        pytest.skip(f"shared corpora not found at {CORPORA}")
    load_signature_model()
    rows = load_corpus(CORPORA)
    assert rows
    for row in rows:
        body = row.body()
        text = body.text if body.text and body.text.strip() else html_to_text(body.html or "")
        lines = quotations.preprocess(text, "\n").splitlines()[: quotations.MAX_LINES_COUNT]
        _same_marks(lines)
        assert talon_plain.extract_from_plain(text) == quotations.extract_from_plain(text), row
