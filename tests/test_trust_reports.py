"""Reading delivery reports and automatic mail, and the notice's subject: pure functions."""

from __future__ import annotations

import pytest

from mailbot.outbound.bounces import read_report
from mailbot.outbound.notices import clean_subject
from mailbot.parse import parse
from mailbot.pipeline.classify import classify
from mailbot.testing import build_mail
from mailbot.trust.resolver import DnsTempError, ZoneResolver

OWN = frozenset({"mailbot.test"})

POSTFIX_DSN = b"""\
From: MAILER-DAEMON@mx.example.com (Mail Delivery System)
To: bounces+abc@mailbot.test
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="XX"

--XX
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.
--XX
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com
Arrival-Date: Mon, 23 Nov 2026 10:00:00 +0000

Final-Recipient: rfc822; Bob@Example.com
Original-Recipient: rfc822;bob@example.com
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.com>: Recipient address rejected:
    User unknown in virtual mailbox table

Final-Recipient: rfc822; carol@example.com
Action: delayed
Status: 4.4.1
--XX
Content-Type: message/rfc822

Message-ID: <note-1@mailbot.test>
Subject: Re: Issue 1

body
--XX--
"""


def test_rfc3464_report_gives_each_failed_recipient_hard_or_soft() -> None:
    report = read_report(POSTFIX_DSN)
    assert [(f.recipient, f.hard, f.status) for f in report.failures] == [
        ("bob@example.com", True, "5.1.1"),
        ("carol@example.com", False, "4.4.1"),
    ]
    assert "User unknown" in report.failures[0].diagnostic
    assert report.original_message_id == "<note-1@mailbot.test>"


def test_report_of_successful_delivery_has_no_failures() -> None:
    delivered = POSTFIX_DSN.replace(b"Action: failed", b"Action: delivered").replace(
        b"Action: delayed", b"Action: relayed"
    )
    assert read_report(delivered).failures == []


def test_x_failed_recipients_without_a_report_is_read_as_hard() -> None:
    raw = build_mail(
        "mailer@mx.example.com",
        "bounces+x@mailbot.test",
        "gone",
        headers={"X-Failed-Recipients": "dave@example.com, Erin@example.com"},
    )
    assert [(f.recipient, f.hard) for f in read_report(raw).failures] == [
        ("dave@example.com", True),
        ("erin@example.com", True),
    ]


def test_a_report_is_classified_as_a_bounce() -> None:
    assert classify(parse(POSTFIX_DSN), "", OWN).kind == "bounce"


@pytest.mark.parametrize(
    ("headers", "subject", "kind"),
    [
        ({"Auto-Submitted": "auto-replied"}, "Re: x", "auto_reply"),
        ({"Auto-Submitted": "auto-notified"}, "Re: x", "auto_reply"),
        ({"Auto-Submitted": "no"}, "Re: x", "person"),
        ({"X-Autoreply": "yes"}, "Re: x", "auto_reply"),
        ({"X-Autorespond": "yes"}, "Re: x", "auto_reply"),
        ({"Precedence": "bulk"}, "Re: x", "auto_reply"),
        ({"Precedence": "junk"}, "Re: x", "auto_reply"),
        ({"Precedence": "list"}, "Re: x", "auto_reply"),
        ({"List-Id": "<dev.example.com>"}, "Re: x", "list"),
        ({"X-Mailbot-Conversation": "issue-1"}, "Re: x", "loop"),
        ({}, "Out of office: back on Monday", "auto_reply"),
        ({}, "Automatische Antwort: Re: x", "auto_reply"),
        ({}, "Risposta automatica: x", "auto_reply"),
        ({}, "Автоответ: x", "auto_reply"),
        ({}, "Re: out of office plans for the team", "person"),
        ({}, "Re: x", "person"),
    ],
)
def test_automatic_mail_is_told_from_a_person(
    headers: dict[str, str], subject: str, kind: str
) -> None:
    raw = build_mail(
        "alice@example.com", "reply+x@mailbot.test", "text", subject=subject, headers=headers
    )
    assert classify(parse(raw), "alice@example.com", OWN).kind == kind


def test_null_sender_and_our_own_domain_are_never_a_person() -> None:
    raw = build_mail("alice@example.com", "reply+x@mailbot.test", "text")
    assert classify(parse(raw), "", OWN).kind == "auto_reply"
    own = build_mail("notifications@mailbot.test", "reply+x@mailbot.test", "text")
    assert classify(parse(own), "bounces+1@mailbot.test", OWN).kind == "loop"


@pytest.mark.parametrize(
    ("subject", "clean"),
    [
        ("[Rejected] Hello", "Hello"),
        ("[Rejected] [Rejected] Re: Hello", "Hello"),
        ("Re: RE: Fwd: Hello", "Hello"),
        ("Hello [Rejected]", "Hello [Rejected]"),
    ],
)
def test_notice_subjects_never_stack(subject: str, clean: str) -> None:
    assert clean_subject(subject) == clean


def test_zone_resolver_answers_only_from_its_zone() -> None:
    resolver = ZoneResolver(
        {"Example.ORG.": ["TXT v=spf1 -all", "MX 10 mx.example.org"], "down.test": ["TXT TEMPFAIL"]}
    )
    assert resolver.lookup("example.org", "TXT") == ["v=spf1 -all"]
    assert resolver.lookup("example.org.", "MX") == ["10 mx.example.org"]
    assert resolver.lookup("other.org", "TXT") == []
    with pytest.raises(DnsTempError):
        resolver.lookup("down.test", "TXT")
    with pytest.raises(ValueError, match="unknown record type"):
        ZoneResolver({"x.test": ["SOA whatever"]})
