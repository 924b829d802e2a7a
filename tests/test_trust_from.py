"""A From that is not exactly one mailbox cannot act: over real SMTP, with DNS from zone data.

Finding 4 of the hardening issue: with example.com publishing DMARC ``p=reject``, a reply
whose From named the victim *and* the forger (``alice@example.com, mallory@evil.test``) was
posted as alice: DMARC had no single From domain to judge and the owner check read only the
first address. Every shape of "more than one" must now be refused, and DMARC judges every
From domain (RFC 7489 §6.6.1).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import pytest

from mailbot import Mailbot, SenderPolicy
from mailbot.bots.comments import CommentsBot
from mailbot.serve import Node, running
from mailbot.store.models import InboundStatus
from mailbot.testing import SmtpSink, settings_for, smtp_send, wait_for_status
from mailbot.trust.authenticate import Authentication, judge_from
from mailbot.trust.resolver import ZoneResolver
from tests.trust_support import FOREIGN_IP, comments, make_thread, outcome, zone


class OpenComments(CommentsBot):
    name = "open-comments"
    sender_policy: ClassVar[SenderPolicy] = "open"


APP = Mailbot(bots=[CommentsBot, OpenComments])


@pytest.fixture
async def node(tmp_path: Path, sink: SmtpSink) -> AsyncIterator[Node]:
    async with running(settings_for(tmp_path, sink, dns_zone=zone()), APP, http=False) as n:
        yield n


def forged(to: str, from_lines: list[str], body: str = "Posting as alice.") -> bytes:
    head = "".join(f"From: {line}\r\n" for line in from_lines)
    return (
        f"{head}To: {to}\r\nSubject: Re: issue\r\nMessage-ID: <forged.{abs(hash(head))}@evil.test>"
        f"\r\n\r\n{body}\r\n"
    ).encode()


async def send_forged(node: Node, to: str, from_lines: list[str]) -> object:
    result = await smtp_send(
        node.smtp_port,
        "mallory@evil.test",
        [to],
        forged(to, from_lines),
        source_address=(FOREIGN_IP, 0),
    )
    assert result.data_code == 250, result
    return await wait_for_status(node.sessions, result.inbound_id)


@pytest.mark.parametrize(
    "from_lines",
    [
        ["alice@example.com, mallory@evil.test"],  # the reproduction
        ["alice@example.com", "mallory@evil.test"],  # two From headers
        ["friends: alice@example.com, mallory@evil.test;"],  # group syntax
        ["alice@example.com, <not an address"],  # a trailing unparseable address
        ["mallory@evil.test, alice@example.com"],  # the victim second
    ],
    ids=["two-addresses", "two-headers", "group", "trailing-garbage", "victim-second"],
)
async def test_a_reply_whose_from_is_not_one_mailbox_is_refused_and_posts_nothing(
    node: Node, from_lines: list[str]
) -> None:
    thread = await make_thread(node)
    row = await send_forged(node, thread.addresses["alice"], from_lines)
    assert row.status == InboundStatus.rejected  # type: ignore[attr-defined]
    assert outcome(row)["code"] == "from_not_single"  # type: ignore[arg-type]
    assert "exactly one address" in (row.reason or "")  # type: ignore[attr-defined]
    assert await comments(node) == []


async def test_dmarc_judges_every_from_domain_so_a_second_address_cannot_hide_a_fail(
    node: Node,
) -> None:
    thread = await make_thread(node)
    row = await send_forged(
        node, thread.addresses["alice"], ["alice@example.com, mallory@evil.test"]
    )
    auth = Authentication.from_json(row.authentication)  # type: ignore[attr-defined]
    assert auth.from_domains == ["example.com", "evil.test"]
    assert (auth.dmarc, auth.dmarc_policy) == ("fail", "reject")
    assert "header.from=example.com,evil.test" in auth.header


async def test_an_open_bot_still_takes_mail_with_two_from_addresses(node: Node) -> None:
    thread = await make_thread(node, key="desk-1", bot="open-comments")
    row = await send_forged(
        node, thread.addresses["alice"], ["alice@example.com, mallory@evil.test"]
    )
    assert row.status == InboundStatus.delivered  # type: ignore[attr-defined]


def test_judge_from_takes_the_worst_verdict_of_all_from_domains() -> None:
    resolver = ZoneResolver(
        {
            "_dmarc.strict.test": ["TXT v=DMARC1; p=reject"],
            "_dmarc.lax.test": ["TXT v=DMARC1; p=none"],
        }
    )
    sender = Authentication(spf="pass", spf_domain="lax.test")
    one = judge_from(sender, ["lax.test"], resolver, "mx.test", "m@lax.test")
    assert (one.dmarc, one.from_domain) == ("pass", "lax.test")
    both = judge_from(sender, ["lax.test", "strict.test"], resolver, "mx.test", "m@lax.test")
    assert (both.dmarc, both.dmarc_policy, both.from_domain) == ("fail", "reject", "")
    none = judge_from(sender, [], resolver, "mx.test", "m@lax.test")
    assert none.dmarc == "permerror"
