"""Composed mail is safe by construction (issue #8, finding 5): no value from a user, a bot or
an inbound mail can add a header line, a recipient, or a line the relay refuses.

The reproductions run as they were found: ``mailbot notify`` as a subprocess and a bot over
real SMTP, each into a real relay (SmtpSink), reading the bytes the relay received.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import format_datetime, getaddresses
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from mailbot import Bot, InboundMail, Mailbot, headers
from mailbot.bots.comments import CommentsBot
from mailbot.serve import Node, running
from mailbot.store.models import InboundStatus, OutboundMessage, OutboundStatus, utcnow
from mailbot.testing import (
    SinkedMail,
    SmtpSink,
    make_thread,
    settings_for,
    smtp_send,
    wait_for_status,
)
from tests.trust_support import zone

MAILBOT = [sys.executable, "-m", "mailbot"]


def _b64_word(decoded: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(decoded.encode()).decode()}?="


# The finding's own value: "x\r\nBcc: evil6@evil.test\r\n" as one encoded word.
EVIL = "=?utf-8?b?eA0KQmNjOiBldmlsNkBldmlsLnRlc3QNCg==?="
# An encoded word whose decoded text is EVIL: decoded once by parse, once more by the
# email package when a bot copies it into a header.
NESTED = _b64_word(EVIL)


# --- what the relay received ------------------------------------------------------------------


def _header_block(raw: bytes) -> list[bytes]:
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    return head.split(b"\n")


def _field_names(raw: bytes) -> list[str]:
    """The names of the fields that start a line: what a relay or a client sees."""
    return [
        line.split(b":", 1)[0].decode().lower()
        for line in _header_block(raw)
        if line and line[:1] not in (b" ", b"\t")
    ]


def _assert_one_recipient(mail: SinkedMail, address: str) -> None:
    """Delivered to ``address`` alone, with one To, no Cc or Bcc, and only lines a relay takes."""
    assert mail.rcpt_tos == [address]
    names = _field_names(mail.raw)
    assert "bcc" not in names and "cc" not in names, names
    assert names.count("to") == 1 and names.count("subject") == 1, names
    assert len(set(names)) == len(names), names
    assert [a for _, a in getaddresses(mail.message.get_all("To", []))] == [address]
    assert all(len(line) <= 998 for line in _header_block(mail.raw))


# --- the mailbot command ------------------------------------------------------------------------


def _env(tmp_path: Path, sink: SmtpSink) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(
        MAILBOT_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        MAILBOT_CPU_WORKERS="0",
        MAILBOT_CONFIG="",  # no mailbot.toml, wherever the tests run
        MAILBOT_DNS="offline",
        MAILBOT_RELAY=sink.url,
    )
    return env


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *MAILBOT, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _notify(env: dict[str, str], key: str, email: str, *options: str) -> str:
    code, out, err = await _cli(env, "notify", key, email, "--body", "Body text.", *options)
    assert code == 0, (out, err)
    assert "Traceback" not in err
    return out.strip()


async def test_notify_with_an_encoded_crlf_in_the_subject_sends_no_bcc_and_one_recipient(
    tmp_path: Path, sink: SmtpSink
) -> None:
    address = await _notify(
        _env(tmp_path, sink), "k", "user@example.com", "--subject", f"Re {EVIL}"
    )
    [mail] = await sink.wait_for(1)
    _assert_one_recipient(mail, "user@example.com")
    # The text the attacker wrote is shown as text, on the Subject line.
    assert mail.message["Subject"] == "Re x Bcc: evil6@evil.test"
    # stdout is still the live reply address the app hands out, and the mail carries it.
    assert address.startswith("reply+")
    assert getaddresses([mail.message["Reply-To"]])[0][1] == address


async def test_notify_with_an_encoded_crlf_in_the_conversation_key_adds_no_header(
    tmp_path: Path, sink: SmtpSink
) -> None:
    env = _env(tmp_path, sink)
    await _notify(env, f"k {EVIL}", "user@example.com", "--subject", "Hello")
    await _notify(env, NESTED, "user@example.com", "--subject", "Hello")
    first, second = await sink.wait_for(2)
    for mail in (first, second):
        _assert_one_recipient(mail, "user@example.com")
    assert first.message["X-Mailbot-Conversation"] == "k x Bcc: evil6@evil.test"
    assert second.message["X-Mailbot-Conversation"] == "x Bcc: evil6@evil.test"
    # The key itself is the application's identifier and is kept as it was given.
    code, out, _ = await _cli(env, "conversation", "show", f"k {EVIL}", "--json")
    assert code == 0 and json.loads(out)["key"] == f"k {EVIL}"


async def test_notify_with_a_literal_crlf_in_subject_and_name_sends_one_sane_line_each(
    tmp_path: Path, sink: SmtpSink
) -> None:
    env = _env(tmp_path, sink)
    await _notify(
        env,
        "k",
        "user@example.com",
        "--subject",
        "Build\r\nBcc: evil@evil.test\r\n\r\nbroken",
        "--name",
        "Ann\r\nBcc: evil@evil.test",
    )
    [mail] = await sink.wait_for(1)
    _assert_one_recipient(mail, "user@example.com")
    assert mail.message["Subject"] == "Build Bcc: evil@evil.test broken"
    [(name, _)] = getaddresses([mail.message["To"]])
    assert name == "Ann Bcc: evil@evil.test"
    assert "Body text." in mail.text  # the injected blank line did not start the body early
    # And the conversation keeps working: a second notification goes out the same way.
    await _notify(env, "k", "other@example.com", "--subject", "Again")
    second = (await sink.wait_for(2))[1]
    _assert_one_recipient(second, "other@example.com")


async def test_a_participant_address_hiding_a_second_address_is_refused_when_created(
    tmp_path: Path, sink: SmtpSink
) -> None:
    env = _env(tmp_path, sink)
    hostile = "victim@example.com>, <evil@evil.test"
    for command, why in (
        (["reply-address", "k", hostile], "not one valid email address"),
        (["notify", "k", hostile, "--subject", "S", "--body", "B"], "not one valid email address"),
        (["reply-address", "k", "Victim <victim@example.com>"], "not one valid email address"),
        (["reply-address", "k", "v@example.com\r\nBcc: e@evil.test"], "not one valid email"),
        (["reply-address", "k\r\nBcc: e@evil.test", "v@example.com"], "one printable line"),
    ):
        code, out, err = await _cli(env, *command)
        assert code == 2, (command, out, err)
        assert out == ""
        [line] = err.splitlines()
        assert line.startswith("mailbot: ") and why in line, line
    # Nothing was stored: no conversation, no participant, no mail.
    code, _, _ = await _cli(env, "conversation", "show", "k")
    assert code == 1
    assert sink.received == []


async def test_a_ten_thousand_character_name_is_cut_and_folded_so_the_relay_accepts_it(
    tmp_path: Path, sink: SmtpSink
) -> None:
    env = _env(tmp_path, sink)
    await _notify(env, "k", "user@example.com", "--subject", "S" * 10_000, "--name", "N" * 10_000)
    [mail] = await sink.wait_for(1)
    _assert_one_recipient(mail, "user@example.com")
    [(name, _)] = getaddresses([mail.message["To"]])
    # (CPython's parser puts a space between adjacent encoded words; RFC 2047 does not.)
    assert name.replace(" ", "") == "N" * (headers.NAME_MAX - 1) + "\u2026"
    assert mail.message["Subject"] == "S" * (headers.SUBJECT_MAX - 1) + "\u2026"
    code, out, _ = await _cli(env, "outbox", "--json")
    assert code == 0 and json.loads(out)["status"] == "sent"


async def test_a_non_ascii_name_and_subject_leave_rfc_2047_encoded(
    tmp_path: Path, sink: SmtpSink
) -> None:
    env = _env(tmp_path, sink)
    subject = "Drucker brennt \u2013 Raum 3 \u2713 \u65e5\u672c\u8a9e"
    await _notify(env, "k", "user@example.com", "--subject", subject, "--name", "J\u00fcrgen M")
    [mail] = await sink.wait_for(1)
    _assert_one_recipient(mail, "user@example.com")
    lines = _header_block(mail.raw)
    assert all(line.isascii() for line in lines)
    for field in (b"Subject: ", b"To: "):
        [line] = [line for line in lines if line.startswith(field)]
        assert b"=?utf-8?" in line, line
    assert mail.message["Subject"] == subject
    assert mail.message["To"].addresses[0].display_name == "J\u00fcrgen M"


# --- a bot copying inbound text into its answer, over real SMTP ----------------------------


class ShoutBot(Bot):
    """The README's example: it copies the inbound Subject into its answer."""

    name = "shout"

    async def process(self, mail: InboundMail) -> None:
        assert mail.participant is not None
        await self.ctx.comment(mail)
        await self.ctx.send(
            mail.participant,
            subject=f"Re: {mail.subject}",
            body=mail.reply.upper(),
            in_reply_to=mail,
        )


def _raw_mail(sender: str, to: str, subject: str, body: str, message_id: str) -> bytes:
    """A message written byte by byte: the email package would decode the hostile subject
    while building it."""
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Date: {format_datetime(utcnow())}\r\nMessage-ID: {message_id}\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


async def _deliver(node: Node, sender: str, to: str, raw: bytes) -> InboundStatus:
    result = await smtp_send(node.smtp_port, sender, [to], raw)
    assert result.data_code == 250, result
    row = await wait_for_status(node.sessions, result.inbound_id)
    assert row.reason is None, row.reason
    return row.status


async def test_a_bot_copying_a_hostile_inbound_subject_into_its_answer_injects_no_header(
    tmp_path: Path, sink: SmtpSink
) -> None:
    app = Mailbot(bots=[ShoutBot])
    async with running(settings_for(tmp_path, sink), app, http=False) as node:
        thread = await make_thread(node, people=("ann",), bot="shout")
        to = thread.addresses["ann"]
        for i, subject in enumerate([EVIL, NESTED, f"Re: {NESTED} tail"]):
            raw = _raw_mail("ann@example.com", to, subject, "quiet please", f"<s{i}@client.test>")
            assert await _deliver(node, "ann@example.com", to, raw) == InboundStatus.delivered
        answers = await sink.wait_for(3)
    for mail in answers:
        _assert_one_recipient(mail, "ann@example.com")
        assert "QUIET PLEASE" in mail.text
    assert [m.message["Subject"] for m in answers] == [
        "Re: x Bcc: evil6@evil.test",
        "Re: x Bcc: evil6@evil.test",
        "Re: Re: x Bcc: evil6@evil.test tail",
    ]


async def test_a_rejection_notice_quoting_a_hostile_subject_injects_no_header(
    tmp_path: Path, sink: SmtpSink
) -> None:
    app = Mailbot(bots=[CommentsBot])
    async with running(settings_for(tmp_path, sink, dns_zone=zone()), app, http=False) as node:
        thread = await make_thread(node, people=("alice", "bob"))
        # Bob (SPF-verified) writes through Alice's address: refused, and Bob is told.
        to = thread.addresses["alice"]
        raw = _raw_mail("bob@example.com", to, NESTED, "I am Alice now", "<n1@client.test>")
        assert await _status(node, "bob@example.com", to, raw) == InboundStatus.rejected
        [notice] = await sink.wait_for(1)
    _assert_one_recipient(notice, "bob@example.com")
    assert notice.message["Subject"] == "[Rejected] x Bcc: evil6@evil.test"
    assert notice.message["In-Reply-To"] == "<n1@client.test>"


async def _status(node: Node, sender: str, to: str, raw: bytes) -> InboundStatus:
    result = await smtp_send(node.smtp_port, sender, [to], raw)
    return (await wait_for_status(node.sessions, result.inbound_id)).status


# --- values stored before they were checked -------------------------------------------------


async def test_bad_values_stored_before_validation_never_make_later_comments_fail(
    node: Node, sink: SmtpSink
) -> None:
    thread = await make_thread(node, people=("alice", "bob", "carol", "dave", "erin"))
    ids = thread.ids
    # Written with plain SQL, as an older mailbot (or another program) could have.
    async with node.sessions() as session, session.begin():
        for pid, column, value in [
            (ids["bob"], "name", "Bob\r\nBcc: evil@evil.test"),
            (ids["carol"], "name", "C" * 10_000),
            (ids["dave"], "email", "victim@example.com>, <evil@evil.test"),
            (ids["erin"], "name", "E" * 70 + ", evil@evil.test, B"),
        ]:
            await session.execute(
                text(f"UPDATE participants SET {column} = :value WHERE id = :id"),
                {"value": value, "id": pid},
            )
        await session.execute(
            text(
                "UPDATE conversations SET key = :key, subject = :subject, root_message_id = :root"
            ),
            {
                "key": "issue-1\r\nBcc: evil@evil.test",
                "subject": f"Issue\r\nBcc: evil@evil.test {NESTED}",
                "root": "<root@x>\r\nBcc: evil@evil.test",
            },
        )
    for i, author in enumerate(["alice", "bob"]):
        sender = f"{author}@example.com"
        # A Gmail-sized Message-ID: threading must carry it whole, not RFC 2047-encoded.
        message_id = f"<CAF=x+y_{'b' * 60}{i}@mail.gmail.com>"
        raw = _raw_mail(sender, thread.addresses[author], "Re: x", f"Comment {i}", message_id)
        status = await _deliver(node, sender, thread.addresses[author], raw)
        assert status == InboundStatus.delivered
        received = await sink.wait_for(3 * (i + 1))
        for person in {"alice", "bob", "carol", "erin"} - {author}:
            mail = [m for m in received if m.rcpt_tos == [f"{person}@example.com"]][-1]
            _assert_one_recipient(mail, f"{person}@example.com")
            assert f"Comment {i}" in mail.text
            assert mail.message["Subject"] == "Re: Issue Bcc: evil@evil.test x Bcc: evil6@evil.test"
            assert mail.message["X-Mailbot-Conversation"] == "issue-1 Bcc: evil@evil.test"
            assert mail.message["In-Reply-To"] == message_id
            assert mail.message["References"] == message_id  # the bad root is left out
    [to_carol] = sink.to("carol@example.com")[:1]
    carol_name = to_carol.message["To"].addresses[0].display_name.replace(" ", "")
    assert carol_name == "C" * (headers.NAME_MAX - 1) + "\u2026"
    [to_erin] = sink.to("erin@example.com")[:1]
    assert to_erin.message["To"].addresses[0].display_name == "E" * 70 + ", evil@evil.test, B"
    # Dave's address was unusable: his mail is stored failed, with why, and never sent.
    async with node.sessions() as session:
        rows = list(await session.scalars(select(OutboundMessage).order_by(OutboundMessage.id)))
    to_dave = [r for r in rows if r.participant_id == ids["dave"]]
    assert [r.status for r in to_dave] == [OutboundStatus.failed] * 2
    assert all(r.reason and r.reason.startswith("not sent: ") for r in to_dave)
    assert len(sink.received) == 6


# --- mailbot.headers, function by function -------------------------------------------------


def test_an_encoded_crlf_is_decoded_into_plain_text_on_one_line() -> None:
    assert headers.header_text(f"Re {EVIL}", 250) == "Re x Bcc: evil6@evil.test"
    assert headers.subject("Re: =?iso-8859-1?q?caf=E9_cr=E8me?=") == "Re: caf\u00e9 cr\u00e8me"
    assert headers.display_name(" Ann \t Lee ") == "Ann Lee"
    assert headers.conversation_key(f"k\n{EVIL}") == "k x Bcc: evil6@evil.test"


def test_a_nested_encoded_word_is_decoded_to_the_end_and_nothing_left_can_decode_again() -> None:
    assert headers.subject(NESTED) == "x Bcc: evil6@evil.test"
    deep = EVIL
    for _ in range(20):  # deeper than the rounds mailbot decodes
        deep = _b64_word(deep)
    cleaned = headers.subject(deep)
    assert "=?" not in cleaned and "\n" not in cleaned
    # A leftover that looks like an encoded word is broken up, not decoded by anyone later.
    assert headers.subject("=?utf-8?x?abc?= a=?b") == "= ?utf-8?x?abc?= a= ?b"
    msg = EmailMessage()
    msg["Subject"] = cleaned
    assert _field_names(msg.as_bytes()) == ["subject"]


def test_control_characters_line_separators_and_bidi_overrides_do_not_survive() -> None:
    hostile = "a\x00b\x07c\x1bd\x7fe\x85f\u2028g\u2029h\x9bi\u202ej\u2066k\ufeffl\udcffm\vn\fo"
    assert headers.header_text(hostile, 250) == "a b c d e f g h ijklm n o"
    assert headers.subject("  \r\n \t ") == ""


def test_long_values_are_cut_to_whole_characters_with_an_ellipsis() -> None:
    assert headers.truncate("abcdef", 6) == "abcdef"
    assert headers.truncate("abcdefg", 6) == "abcde\u2026"
    assert headers.truncate("abcd e\u0301f", 6) == "abcd\u2026"  # é is not cut from its accent
    assert headers.truncate("abc   defgh", 6) == "abc\u2026"
    assert len(headers.subject("x" * 100_000)) == headers.SUBJECT_MAX
    assert len(headers.display_name("\u00e9" * 1000)) == headers.NAME_MAX


def test_adjacent_encoded_words_join_and_broken_ones_stay_text() -> None:
    # One character split across two words, the space between them not being text.
    assert headers.decode_encoded_words("=?utf-8?b?4p?= =?utf-8?b?gKY=?=") == "\u2026"
    assert headers.decode_encoded_words("=?utf-8?q?a?= b =?utf-8?q?c?=") == "a b c"
    assert headers.decode_encoded_words("=?utf-8?b?!!!?=") == "=?utf-8?b?!!!?="
    for charset in ("undefined", "idna", "no-such-charset", "utf-7", "unicode_escape"):
        assert headers.decode_encoded_words(f"=?{charset}?q?a+2AA-b?=") in ("a+2AA-b", "a\ud800b")
    # An escape codec would turn plain ASCII into a line break: it is read as UTF-8 instead.
    assert headers.decode_encoded_words("=?unicode_escape?q?a\\r\\nb?=") == "a\\r\\nb"
    assert headers.subject("=?utf-7?q?+2AA-?=") == ""  # a lone surrogate is dropped


def test_addr_spec_is_exactly_one_plain_address() -> None:
    assert headers.addr_spec(" ann.lee+tag@mail.example.com ") == "ann.lee+tag@mail.example.com"
    assert headers.addr_spec("notifications@localhost") == "notifications@localhost"
    for bad in [
        "victim@example.com>, <evil@evil.test",
        "a@example.com, b@example.com",
        "Ann <ann@example.com>",
        '"a b"@example.com',
        "a@[127.0.0.1]",
        "a@example.com\r\nBcc: evil@evil.test",
        f"{EVIL}@example.com",
        "a" * 65 + "@example.com",
        "a@" + "b" * 300 + ".com",
        "a@b@c",
        "",
    ]:
        with pytest.raises(headers.InvalidAddress):
            headers.addr_spec(bad)


def test_a_participant_address_is_validated_and_normalised() -> None:
    assert headers.participant_address(" Ann@Example.COM\n") == "ann@example.com"
    assert headers.participant_address("maintainer@example.test") == "maintainer@example.test"
    assert headers.participant_address("a@b\u00fccher.example") == "a@xn--bcher-kva.example"
    for bad in [
        "victim@example.com>, <evil@evil.test",
        "Victim <victim@example.com>",
        "a@localhost",  # reserved (RFC 6761); and our own default domain
        "\u00fc@example.com",  # SMTPUTF8 local part: the composer writes ASCII only
        "=?utf-8?q?a?=@example.com",
        "a@example.com\nb@example.com",
        "x" * 5000 + "@example.com",
    ]:
        with pytest.raises(headers.InvalidAddress) as caught:
            headers.participant_address(bad)
        assert "\n" not in str(caught.value)


def test_only_angle_bracketed_message_ids_without_encoded_words_are_kept() -> None:
    assert headers.message_id(" <CAF=x+y_z@mail.gmail.com> ") == "<CAF=x+y_z@mail.gmail.com>"
    for bad in [
        None,
        "",
        "12345",
        "<no-at-sign>",
        "<a@b> <c@d>",
        "<a@b>\r\nBcc: evil@evil.test",
        "<x=?utf-8?b?eA0KQmNjOiBldmlsNkBldmlsLnRlc3QNCg==?=@a>",
        "<" + "a" * 300 + "@b>",
        "<\u00e9@b>",
    ]:
        assert headers.message_id(bad) is None


def test_the_composed_bytes_check_refuses_any_line_the_composer_did_not_set() -> None:
    fields = ["Subject", "To"]
    headers.check_composed(b"Subject: a\n b\r\nTo: x@y.z\n\nbody\nBcc: not a header\n", fields)
    for raw, why in [
        (b"Subject: a\nBcc: evil@evil.test\nTo: x@y.z\n\nbody", "where the composer set"),
        (b"Subject: a\rBcc: e@e.test\nTo: x@y.z\n\n", "where the composer set"),
        (b"Subject: a\n\nTo: x@y.z\n\nbody", "where the composer set"),
        (b" a\nSubject: a\nTo: x@y.z\n\n", "continuation line before any field"),
        (b"Subject: a\nnot a field\nTo: x@y.z\n\n", "no field"),
        (b"Subject: " + b"a" * 1000 + b"\nTo: x@y.z\n\n", "octets"),
        (b"Subject: \xc3\xa9\nTo: x@y.z\n\n", "not plain ASCII"),
        (b"Subject: a\nTo: x@y.z", "never ends"),
    ]:
        with pytest.raises(headers.UnsafeMessage, match=why):
            headers.check_composed(raw, fields)


_PIECES = ["\r\n", "\r", "\n", "\x85", "\u2028", "=?", "?=", "Bcc: evil@evil.test", EVIL, " "]
_PIECES += [", <evil@evil.test>", '"', "\\", "(", ")", ":", ";", "A" * 70, "\u00fc" * 30]
_hostile_text = st.lists(
    st.one_of(
        st.text(alphabet=st.characters(blacklist_categories=()), max_size=30),
        st.sampled_from(_PIECES),
        st.text(max_size=30).map(_b64_word),
        st.text(max_size=30).map(lambda t: _b64_word(_b64_word(t))),
    ),
    max_size=12,
).map("".join)


# Derandomized: the same examples on every run (CI never meets a new one by chance).
PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None)


@PROPERTY
@given(_hostile_text)
# The email package's own folder left "=?utf-8?q?=C2=A1?=" undecodable in this one.
@example("A" * 70 + " 0000000000:\u0800 \u00a1 \u00a1 \u00a1")
def test_any_text_made_a_subject_gives_exactly_the_fields_the_composer_set(value: str) -> None:
    subject = headers.subject(value)
    assert len(subject) <= headers.SUBJECT_MAX
    msg = EmailMessage(policy=headers.COMPOSE_POLICY)
    msg.set_raw("Subject", headers.unstructured("Subject", subject))
    msg["To"] = "x@example.com"
    msg.set_content("body")
    raw = msg.as_bytes()
    headers.check_composed(raw, msg.keys())
    back = BytesParser(policy=default_policy).parsebytes(raw)
    assert back.keys() == msg.keys()
    # The text survives (the email package's folding may move a space between encoded words).
    assert "".join(str(back["Subject"]).split()) == "".join(subject.split())


@PROPERTY
@given(_hostile_text)
def test_a_mailbox_is_one_address_whatever_the_display_name(name: str) -> None:
    msg = EmailMessage(policy=headers.COMPOSE_POLICY)
    msg.set_raw("To", headers.mailbox("To", name, "ann@example.com"))
    msg.set_content("body")
    raw = msg.as_bytes()
    headers.check_composed(raw, msg.keys())
    back = BytesParser(policy=default_policy).parsebytes(raw)
    [address] = back["To"].addresses
    assert address.addr_spec == "ann@example.com"
    # (CPython's parser may put a space between adjacent encoded words; RFC 2047 does not.)
    assert "".join(address.display_name.split()) == "".join(headers.display_name(name).split())


def test_a_display_name_longer_than_a_line_keeps_its_quotes_when_folded() -> None:
    # The email package (3.11.7) drops the quotes when it folds this: three addresses in To.
    name = "A" * 70 + ", evil@evil.test, B"
    value = headers.mailbox("To", name, "ann@example.com")
    assert value == '"' + "A" * 70 + ',\n evil@evil.test, B" <ann@example.com>'
    msg = EmailMessage(policy=headers.COMPOSE_POLICY)
    msg.set_raw("To", value)
    msg.set_content("body")
    back = BytesParser(policy=default_policy).parsebytes(msg.as_bytes())
    assert [(a.display_name, a.addr_spec) for a in back["To"].addresses] == [
        (name, "ann@example.com")
    ]
    assert headers.mailbox("From", "Ann Lee", "a@b.example") == "Ann Lee <a@b.example>"
    assert headers.mailbox("To", " \r\n", "a@b.example") == "a@b.example"
    assert headers.mailbox("To", "J\u00fcrgen M", "a@b.example") == (
        "=?utf-8?b?SsO8cmdlbg==?= M <a@b.example>"
    )
    with pytest.raises(headers.InvalidAddress):
        headers.mailbox("To", "Ann", "ann@example.com, evil@evil.test")


def test_message_ids_stay_whole_and_unencoded_however_long() -> None:
    gmail = "<CAF=x+y_" + "b" * 60 + "@mail.gmail.com>"
    value = headers.message_ids("References", ["<root@x.test>", None, gmail, "junk", gmail])
    assert value == f"<root@x.test>\n {gmail}"
    assert headers.message_ids("References", ["12345", None]) is None
    msg = EmailMessage(policy=headers.COMPOSE_POLICY)
    msg.set_raw("In-Reply-To", gmail)
    msg.set_raw("References", value)
    msg.set_content("body")
    back = BytesParser(policy=default_policy).parsebytes(msg.as_bytes())
    assert back["In-Reply-To"] == gmail
    assert back["References"].split() == ["<root@x.test>", gmail]
