"""Reply by email becomes a comment, and the other participants get it: end to end over SMTP."""

from __future__ import annotations

import csv
from datetime import timedelta
from email.utils import getaddresses
from pathlib import Path

from mailbot.parse import parse
from mailbot.serve import Node
from mailbot.store import conversations, tokens
from mailbot.store.models import InboundStatus
from mailbot.testing import SmtpSink, build_mail, make_thread, smtp_send, wait_for_status


def _reply_to_token(mail_reply_to: str) -> str:
    address = getaddresses([mail_reply_to])[0][1]
    token = tokens.token_from_local_part(address.split("@")[0])
    assert token is not None, mail_reply_to
    return token


async def test_reply_becomes_a_comment_and_the_others_are_emailed(
    node: Node, sink: SmtpSink
) -> None:
    thread = await make_thread(node)
    raw = build_mail(
        "Alice <alice@example.com>",
        thread.addresses["alice"],
        "I can reproduce it on 2.3 too.\n\n"
        "On Mon, 23 Nov 2026 at 10:00, mailbot <notifications@localhost> wrote:\n"
        "> Bob opened issue-1\n",
        message_id="<alice-1@client.example>",
    )
    result = await smtp_send(node.smtp_port, "alice@example.com", [thread.addresses["alice"]], raw)
    row = await wait_for_status(node.sessions, result.inbound_id)
    assert (row.status, row.reason) == (InboundStatus.delivered, None)
    assert row.quote is not None and "Bob opened issue-1" in row.quote

    async with node.sessions() as session:
        convo = await conversations.get(session, "issue-1")
    assert convo is not None
    [comment] = convo.comments
    assert comment.body == "I can reproduce it on 2.3 too."
    assert comment.participant is not None and comment.participant.email == "alice@example.com"

    await sink.wait_for(2)
    assert sink.to("alice@example.com") == []  # the author is not sent their own words
    root = convo.root_message_id
    seen_tokens = set()
    for person in ("bob", "carol"):
        [mail] = sink.to(f"{person}@example.com")
        msg = mail.message
        assert "I can reproduce it on 2.3 too." in mail.text
        assert "Bob opened issue-1" not in mail.text  # the quote is not passed on
        assert msg["In-Reply-To"] == "<alice-1@client.example>"
        assert root in msg["References"].split() and "<alice-1@client.example>" in msg["References"]
        assert msg["Auto-Submitted"] == "auto-generated"
        assert msg["Subject"] == "Re: Issue issue-1"
        assert "Alice" in msg["From"]
        assert mail.mail_from.startswith("bounces+")
        token = _reply_to_token(msg["Reply-To"])
        seen_tokens.add(token)
        # Each recipient's Reply-To is their own live address.
        async with node.sessions() as session:
            check = await tokens.check(session, token)
        assert check.live and check.participant is not None
        assert check.participant.email == f"{person}@example.com"
    assert len(seen_tokens) == 2


async def test_a_reply_to_a_notification_threads_back_into_the_conversation(
    node: Node, sink: SmtpSink
) -> None:
    thread = await make_thread(node)
    first = build_mail("alice@example.com", thread.addresses["alice"], "First!")
    await wait_for_status(
        node.sessions,
        (
            await smtp_send(node.smtp_port, "alice@example.com", [thread.addresses["alice"]], first)
        ).inbound_id,
    )
    await sink.wait_for(2)
    [to_bob] = sink.to("bob@example.com")
    bob_address = getaddresses([to_bob.message["Reply-To"]])[0][1]
    answer = build_mail(
        "Bob <bob@example.com>",
        bob_address,
        "Second.\n\nOn Tue, Alice (via mailbot) <notifications@localhost> wrote:\n> First!\n",
        headers={
            "In-Reply-To": to_bob.message["Message-ID"],
            "References": to_bob.message["References"],
        },
    )
    result = await smtp_send(node.smtp_port, "bob@example.com", [bob_address], answer)
    row = await wait_for_status(node.sessions, result.inbound_id)
    assert row.status == InboundStatus.delivered
    await sink.wait_for(4)
    assert [m.text.count("Second.") for m in sink.to("alice@example.com")] == [1]
    assert len(sink.to("carol@example.com")) == 2
    async with node.sessions() as session:
        convo = await conversations.get(session, "issue-1")
    assert convo is not None
    assert [(c.participant.email if c.participant else None, c.body) for c in convo.comments] == [
        ("alice@example.com", "First!"),
        ("bob@example.com", "Second."),
    ]


def _standard_replies(corpora: Path) -> list[tuple[str, Path, str, str]]:
    folder = corpora / "mailgun_talon"
    rows = []
    with (folder / "manifest.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["id"].startswith("standard_replies/") and row["usable"] == "yes":
                eml = folder / row["input_file"].split(" | ")[0]
                expected = (folder / row["expected_file"]).read_text().strip()
                rows.append((row["client"], eml, expected, row["flags"]))
    return rows


async def test_real_client_replies_become_clean_comments(
    node: Node, sink: SmtpSink, corpora: Path
) -> None:
    """Gmail, Outlook, Apple Mail, Thunderbird, Yahoo, Android, iPhone... as they really send."""
    cases = _standard_replies(corpora)
    assert len(cases) >= 10
    failures = []
    for i, (client, eml, expected, flags) in enumerate(cases):
        raw = eml.read_bytes()
        sender = parse(raw).sender
        assert sender, eml
        thread = await make_thread(node, key=f"corpus-{i}", people=("watcher",))
        async with node.sessions() as session, session.begin():
            convo = await conversations.get(session, f"corpus-{i}")
            assert convo is not None
            participant = await conversations.ensure_participant(session, convo, sender)
            token = await tokens.issue(session, participant, timedelta(days=1))
        address = tokens.reply_address(token, node.settings.domain)
        result = await smtp_send(node.smtp_port, sender, [address], raw)
        row = await wait_for_status(node.sessions, result.inbound_id)
        if "signature_kept" in flags:
            # The comment drops the mobile signature; the expectation keeps it.
            expected = expected.split("\n\n")[0]
        expected = "\n".join(line.rstrip() for line in expected.splitlines()).strip()
        if client.lower() == "thunderbird":
            # Written below the quote: the answer keeps its question (issue #14).
            expected = "> Hi\n\n" + expected
        if row.status != InboundStatus.delivered or row.reply_text != expected:
            failures.append((client, row.status, row.reason, row.reply_text, expected))
        del thread
    assert failures == []
