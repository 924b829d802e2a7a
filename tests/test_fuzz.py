"""Fuzzing what the worker does with every message (screen, ``parse``, ``strip``, and
``authenticate``: SPF, DKIM and DMARC against offline zone data) with
hypothesis, for a bounded time (derandomized: the same examples on every run, no database).

Inputs: header fields built by hypothesis itself (so failures shrink to a few fields), whole
messages from :mod:`mailbot.testing.hostile` driven by a hypothesis-seeded ``Random``
(encoded words in odd charsets, NULs, CR/LF variants, 8-bit bytes, nested multiparts with
right and wrong boundaries, very long lines), raw bytes, and mutations of the shared corpora
when they are present.

For every message: nothing raises (and parse's last-resort guard never had to act), every
string is storable (no NUL, valid UTF-8, header values on one line), the screen and the parser
agree on what is too deep or too many, and, when the screen lets the message through, screen
plus parse plus strip take less than the time bound per message and less than the memory bound.
"""

from __future__ import annotations

import random
import time
from email.message import Message, _parseparam  # type: ignore[attr-defined]
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, event, example, given, note, settings
from hypothesis import strategies as st

from mailbot.decoding import parseparam
from mailbot.parse import ParsedMail, parse
from mailbot.screen import MAX_BOUNDARY, Limits, boundary_of, screen_headers, screen_structure
from mailbot.strip.reply import load_signature_model, strip
from mailbot.testing.hostile import (
    CHARSETS,
    HEADER_NAMES,
    SNIPPETS,
    corpus_messages,
    header,
    hostile_mail,
)
from mailbot.trust.authenticate import check_sender, from_domains_of, judge_from
from mailbot.trust.resolver import ZoneResolver
from tests.test_hostile_mail import MB, SECONDS_PER_MESSAGE, assert_storable, measured

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
CORPUS = corpus_messages(CORPORA) if CORPORA.is_dir() else []
LIMITS = Limits()
CODES = {
    "header_too_large",
    "too_many_headers",
    "structured_header_too_large",
    "too_many_encoded_words",
    "too_many_addresses",
    "mime_too_deep",
    "too_many_parts",
}

FUZZ = settings(
    deadline=None,
    # no shrinking: shrinking a seeded Random's draws can take minutes and gains little; a
    # failing example is shown whole (note() above) and recurs on every run (derandomized)
    phases=[Phase.explicit, Phase.generate],
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.function_scoped_fixture,
    ],
)


@pytest.fixture(scope="module", autouse=True)
def signature_model() -> None:
    load_signature_model()  # once, not inside the first message's time


def stripped(mail: ParsedMail) -> None:
    found = strip(mail.text, mail.html, mail.sender)
    for text in (found.reply, found.signature, found.quote):
        assert text is None or "\x00" not in text


def check(raw: bytes) -> None:
    """Everything the module docstring promises, for one message."""
    started = time.perf_counter()
    head = screen_headers(raw, LIMITS)
    structure = screen_structure(raw, LIMITS)
    screened = time.perf_counter() - started
    assert {r.code for r in (head, structure) if r is not None} <= CODES
    # shown by --hypothesis-show-statistics, and the input of a failing example
    event(f"screen: {structure.code if structure else 'let through'}")
    note(f"message ({len(raw)} bytes): {raw[:3000]!r}")
    if head is not None:  # screen_structure checks the top-level header section too
        assert structure is not None
    mail, peak, parsed = measured(lambda: parse(raw))
    assert not [d for d in mail.defects if d.startswith("ParseError")], mail.defects
    assert_storable(mail)
    started = time.perf_counter()
    stripped(mail)
    stripping = time.perf_counter() - started
    if structure is None:
        assert not {"MimeTooDeep", "TooManyParts"} & set(mail.defects)
        assert screened + parsed + stripping < SECONDS_PER_MESSAGE
        assert peak < 64 * MB


# Header fields as hypothesis builds them: a value is a few pieces that make parsers stumble.
encoded_words = st.builds(
    lambda charset, kind, text: b"=?" + charset + b"?" + kind + b"?" + text + b"?=",
    st.sampled_from(CHARSETS),
    st.sampled_from([b"q", b"B", b"x"]),
    st.binary(max_size=30),
)
value_pieces = st.one_of(
    st.sampled_from(SNIPPETS),
    encoded_words,
    st.binary(max_size=40),
    st.sampled_from([b"alice@example.com", b"<a@b>", b"multipart/mixed; boundary=x", b"--x"]),
)
header_values = st.lists(value_pieces, max_size=12).map(b"".join)
header_fields = st.tuples(
    st.one_of(st.sampled_from(HEADER_NAMES), st.binary(min_size=1, max_size=12)),
    header_values,
)
line_ends = st.sampled_from([b"\r\n", b"\n", b"\r"])


@settings(FUZZ, max_examples=250)
@given(st.lists(header_fields, max_size=15), line_ends, st.binary(max_size=300))
@example([(b"From", b"," * 8000 + b"<alice@example.com>")], b"\r\n", b"hi")
@example([(b"Message-ID", b"12345"), (b"Content-Type", b"text/plain; charset=idna")], b"\n", b"x")
def test_any_header_fields_parse_and_strip_safely(
    fields: list[tuple[bytes, bytes]], newline: bytes, body: bytes
) -> None:
    raw = newline.join(name + b": " + value for name, value in fields)
    check(raw + newline + newline + body)


@settings(FUZZ, max_examples=600)
@given(st.randoms(use_true_random=False))
def test_generated_hostile_mail_parses_and_strips_safely(rng: random.Random) -> None:
    check(hostile_mail(rng))


@settings(FUZZ, max_examples=300)
@given(st.binary(max_size=4000))
def test_raw_bytes_parse_and_strip_safely(raw: bytes) -> None:
    check(raw)


@pytest.mark.skipif(not CORPUS, reason=f"the shared corpora are not at {CORPORA}")
@settings(FUZZ, max_examples=400)
@given(st.randoms(use_true_random=False))
def test_mutated_corpus_messages_parse_and_strip_safely(rng: random.Random) -> None:
    check(hostile_mail(rng, CORPUS))


params_text = st.text(alphabet=";\"\\= a*'b%", max_size=40)


@settings(FUZZ, max_examples=400)
@given(params_text)
def test_the_linear_parameter_split_equals_the_standard_librarys(value: str) -> None:
    assert parseparam(value) == _parseparam(value)


@settings(FUZZ, max_examples=400)
@given(st.text(alphabet=';"\\= abx-', max_size=30))
def test_the_screens_boundary_is_the_parsers_boundary(params: str) -> None:
    value = "multipart/mixed; " + params
    msg = Message()
    msg["Content-Type"] = value
    expected = msg.get_boundary()
    if expected is not None and len(expected) > MAX_BOUNDARY:
        expected = None
    assert boundary_of(value) == expected


# Found by this fuzzing, in strip (mailbot/strip/quotes.py and talon): each took seconds for a few
# kilobytes and grew with the cube of the line length.


def test_strip_is_fast_on_a_long_blank_line() -> None:
    """quotes.FORWARD and quotes._ORIGINAL begin ``^\\s*[-_=*\\s]*\\s*``: three ways to
    read each blank, tried against each other (450 tabs: seconds; 2,000: minutes)."""
    started = time.perf_counter()
    strip("Thanks.\n" + "\t" * 450 + "\nBye", None, "a@b.c")
    assert time.perf_counter() - started < SECONDS_PER_MESSAGE


def test_strip_is_fast_on_a_long_line_of_attribution_fragments() -> None:
    """talon's "On <date> <person> wrote:" splitter on one long line that never says
    "wrote" (19 KB: seconds; 85 KB: minutes)."""
    text = "On Mon, 23 Nov 2026 at 10:00, Bob <bob@example." * 400
    started = time.perf_counter()
    strip(text, None, "a@b.c")
    assert time.perf_counter() - started < SECONDS_PER_MESSAGE


ZONE = ZoneResolver(
    {
        "example.com": ["TXT v=spf1 ip4:127.0.0.1 -all"],
        "_dmarc.example.com": ["TXT v=DMARC1; p=reject"],
        "sel._domainkey.example.com": ["TXT v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOC"],
    }
)


def authenticated(raw: bytes) -> None:
    """SPF, every DKIM signature and DMARC for every From domain, as the worker runs them."""
    started = time.perf_counter()
    sender = check_sender(
        raw,
        client_ip="127.0.0.1",
        helo="client.example",
        mail_from="a@example.com",
        resolver=ZONE,
    )
    mail = parse(raw)
    auth = judge_from(sender, from_domains_of(mail), ZONE, "mx.test", "a@example.com")
    assert auth.dmarc in {"pass", "fail", "none", "temperror", "permerror"}
    assert "\n" not in auth.header.replace(";\n\t", "; ")
    if screen_structure(raw, LIMITS) is None:
        assert time.perf_counter() - started < SECONDS_PER_MESSAGE


@settings(FUZZ, max_examples=300)
@given(st.randoms(use_true_random=False))
def test_generated_hostile_mail_authenticates_safely(rng: random.Random) -> None:
    raw = hostile_mail(rng)
    if rng.random() < 0.5:  # a DKIM-Signature header made of the same hostile pieces
        raw = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=" + (
            header(rng) + b"; b=" + header(rng) + b"\r\n" + raw
        )
    authenticated(raw)


@settings(FUZZ, max_examples=200)
@given(st.lists(header_fields, max_size=15), st.binary(max_size=300))
def test_any_header_fields_authenticate_safely(
    fields: list[tuple[bytes, bytes]], body: bytes
) -> None:
    authenticated(b"\r\n".join(name + b": " + value for name, value in fields) + b"\r\n\r\n" + body)


def test_strip_is_fast_on_a_long_run_of_blanks_before_a_header_like_line() -> None:
    """quotes._HEADER_LINE began ``^\\s*\\*?\\s*``: two ``\\s*`` sharing a run of blanks, tried
    every way (a 3 KB fuzz message: 0.7 s; quadratic in the run)."""
    text = "Content-Typ" + " " * 2000 + "\n" + "\t\n" * 60 + " " * 4000 + "x\n"
    started = time.perf_counter()
    for _ in range(5):
        strip(text, None, "a@b.c")
    assert time.perf_counter() - started < SECONDS_PER_MESSAGE
