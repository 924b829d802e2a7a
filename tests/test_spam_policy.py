"""Spam policy decisions and the spamd client's own behaviour, without spamd (unit tests).

What spamd really says is tested in test_spam.py; here a report text, a threshold table and
a stand-in TCP server (for counting connections) are enough.
"""

from __future__ import annotations

import asyncio

import pytest

from mailbot import Bot, InboundMail, Mailbot
from mailbot.bots.comments import CommentsBot
from mailbot.config import Settings
from mailbot.errors import SpamdUnavailable
from mailbot.spam.client import Rule, SpamChecker, Verdict, parse_rules
from mailbot.spam.policy import Thresholds, scans_at_data, thresholds_for

REPORT = """\
Spam detection software, running on the system "vm",
has identified this incoming email as possible spam.

Content preview:  XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X

Content analysis details:   (1003.3 points, 5.0 required)

 pts rule name              description
---- ---------------------- --------------------------------------------------
 2.7 MISSING_DATE           Missing Date: header
-0.0 NO_RELAYS              Informational: message was not relayed via SMTP
1000 GTUBE                  BODY: Generic Test for Unsolicited Bulk Email
 0.1 URIBL_BLOCKED          ADMINISTRATOR NOTICE: The query to URIBL was
                            blocked.  See
                            http://wiki.apache.org/spamassassin/DnsBlocklists
                            for more information.
                            [URIs: example.com]

"""


class Strict(Bot):
    name = "strict"
    spam_quarantine_score = 2.0
    spam_reject_score = 8.0

    async def process(self, mail: InboundMail) -> None:
        pass


def test_report_rules_are_read_with_scores_and_unwrapped_descriptions() -> None:
    rules = parse_rules(REPORT)
    assert [r.name for r in rules] == ["MISSING_DATE", "NO_RELAYS", "GTUBE", "URIBL_BLOCKED"]
    assert rules[2] == Rule("GTUBE", 1000.0, "BODY: Generic Test for Unsolicited Bulk Email")
    assert rules[1].score == 0.0
    assert rules[3].description == (
        "ADMINISTRATOR NOTICE: The query to URIBL was blocked.  See "
        "http://wiki.apache.org/spamassassin/DnsBlocklists for more information. "
        "[URIs: example.com]"
    )


def test_a_report_without_a_rules_table_gives_no_rules() -> None:
    assert parse_rules("Spam detection software\n\nnothing here\n") == []


def test_quarantine_defaults_to_spamds_own_threshold_and_reject_wins_above_it() -> None:
    default = Thresholds(quarantine=None, reject=None)
    assert default.decide(Verdict(4.9, 5.0)) == "deliver"
    assert default.decide(Verdict(5.0, 5.0)) == "quarantine"
    assert default.decide(Verdict(1000.0, 5.0)) == "quarantine"  # no reject score: never refused
    assert Thresholds(quarantine=None, reject=10.0).decide(Verdict(10.0, 5.0)) == "reject"
    assert Thresholds(quarantine=3.0, reject=None).decide(Verdict(3.5, 5.0)) == "quarantine"


def test_a_bots_thresholds_override_the_nodes_and_fall_back_where_unset() -> None:
    settings = Settings(spam_quarantine_score=6.0, spam_reject_score=20.0)
    assert thresholds_for(settings, Strict) == Thresholds(2.0, 8.0)
    assert thresholds_for(settings, CommentsBot) == Thresholds(6.0, 20.0)
    assert thresholds_for(settings, None) == Thresholds(6.0, 20.0)


def test_scanning_moves_to_data_time_only_when_the_smtp_answer_depends_on_it() -> None:
    plain = Mailbot(bots=[CommentsBot])
    assert not scans_at_data(Settings(spamd="127.0.0.1:783"), plain)
    assert scans_at_data(Settings(spamd="127.0.0.1:783", spamd_down="tempfail"), plain)
    assert scans_at_data(Settings(spamd="127.0.0.1:783", spam_reject_score=15.0), plain)
    assert scans_at_data(Settings(spamd="127.0.0.1:783"), Mailbot(bots=[CommentsBot, Strict]))


async def test_no_more_than_concurrency_connections_reach_spamd_at_once() -> None:
    """A stand-in spamd that answers after a pause and counts connections open at once."""
    open_now = 0
    most = 0
    release = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        await reader.read()  # the whole request (the client half-closes)
        await release.wait()
        body = b"PONG"
        writer.write(b"SPAMD/1.5 0 EX_OK\r\nContent-length: 4\r\n\r\n" + body)
        await writer.drain()
        open_now -= 1
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    checker = SpamChecker(f"127.0.0.1:{port}", timeout=10.0, concurrency=2)
    pings = [asyncio.create_task(checker.ping()) for _ in range(6)]
    while most < 2:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # room for a third connection to show up if it could
    release.set()
    assert await asyncio.gather(*pings) == [True] * 6
    assert most == 2
    server.close()
    await server.wait_closed()


async def test_refused_connection_is_spamd_unavailable_with_the_address() -> None:
    server = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(SpamdUnavailable, match=f"127.0.0.1:{port}"):
        await SpamChecker(f"127.0.0.1:{port}", timeout=2.0).check(b"Subject: x\r\n\r\nhi\r\n")
