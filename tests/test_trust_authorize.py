"""Who may post through a reply address, and who is told why not: over real SMTP.

Every node here answers DNS from zone data (tests/trust_support.py): example.com publishes
SPF for 127.0.0.1 and DMARC p=reject, so mail sent from 127.0.0.2 in its name is forged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mailbot import Mailbot, SenderPolicy
from mailbot.bots.comments import CommentsBot
from mailbot.serve import Node, running
from mailbot.store.models import InboundMessage, InboundStatus
from mailbot.testing import SmtpSink, build_mail, settings_for, smtp_send, wait_for_status
from tests.trust_support import (
    FOREIGN_IP,
    comments,
    dkim_sign,
    make_thread,
    outbound_rows,
    outcome,
    zone,
)


class StrictComments(CommentsBot):
    name = "strict-comments"
    sender_policy: ClassVar[SenderPolicy] = "strict"


class OpenComments(CommentsBot):
    name = "open-comments"
    sender_policy: ClassVar[SenderPolicy] = "open"


APP = Mailbot(bots=[CommentsBot, StrictComments, OpenComments])


@pytest.fixture
async def node(tmp_path: Path, sink: SmtpSink) -> AsyncIterator[Node]:
    settings = settings_for(
        tmp_path,
        sink,
        dns_zone=zone(),
        sender_aliases={"alice@example.com": ["Alice.Work@Example.com"]},
    )
    async with running(settings, APP, http=False) as started:
        yield started


async def deliver(
    node: Node,
    sender: str,
    to: str,
    body: str,
    *,
    ip: str = "127.0.0.1",
    mail_from: str | None = None,
    raw: bytes | None = None,
    **build: Any,
) -> InboundMessage:
    """Send one mail over SMTP from ``ip`` and wait until the worker is done with it."""
    raw = raw if raw is not None else build_mail(sender, to, body, **build)
    result = await smtp_send(
        node.smtp_port,
        mail_from if mail_from is not None else sender,
        [to],
        raw,
        source_address=(ip, 0),
    )
    assert result.data_code == 250, result
    return await wait_for_status(node.sessions, result.inbound_id)


async def test_owner_reply_is_authenticated_and_posted(node: Node) -> None:
    thread = await make_thread(node)
    raw = dkim_sign(build_mail("alice@example.com", thread.addresses["alice"], "Ship it."))
    row = await deliver(node, "alice@example.com", thread.addresses["alice"], "", raw=raw)
    assert row.status == InboundStatus.delivered, row.reason
    auth = row.authentication or {}
    assert (auth["spf"], auth["dmarc"], auth["dmarc_policy"]) == ("pass", "pass", "reject")
    assert [s["result"] for s in auth["dkim"]] == ["pass"]
    first = (row.parsed or {})["headers"][0]
    assert first[0] == "Authentication-Results"
    assert first[1].startswith(f"{node.settings.hostname};")
    assert (row.parsed or {})["authentication"]["header"] == auth["header"]


async def test_forged_authentication_results_in_our_name_are_dropped(node: Node) -> None:
    thread = await make_thread(node)
    fake = f"{node.settings.hostname}; spf=pass; dkim=pass; dmarc=pass"
    row = await deliver(
        node,
        "alice@example.com",
        thread.addresses["alice"],
        "Hi",
        headers={"Authentication-Results": fake},
    )
    results = [v for k, v in (row.parsed or {})["headers"] if k == "Authentication-Results"]
    assert results == [(row.authentication or {})["header"]]


async def test_spoofed_from_on_a_valid_token_is_rejected_without_a_notice(node: Node) -> None:
    thread = await make_thread(node)
    row = await deliver(
        node, "alice@example.com", thread.addresses["alice"], "Approve everything", ip=FOREIGN_IP
    )
    assert row.status == InboundStatus.rejected
    assert outcome(row)["code"] == "dmarc_fail"
    assert "DMARC failed for example.com (p=reject)" in (row.reason or "")
    assert outcome(row)["notice"] == {
        "sent": False,
        "why": "no notice for a refusal of kind dmarc_fail",  # the forger is not told
    }
    assert await comments(node) == []
    assert await outbound_rows(node) == []


async def test_token_used_by_another_participant_is_rejected_and_the_sender_told(
    node: Node, sink: SmtpSink
) -> None:
    thread = await make_thread(node)
    row = await deliver(
        node,
        "bob@example.com",
        thread.addresses["alice"],
        "I am Alice now",
        subject="Re: Issue issue-1",
    )
    assert row.status == InboundStatus.rejected
    assert outcome(row)["code"] == "not_owner"
    assert row.reason == "bob@example.com is not the participant this reply address was sent to"
    assert await comments(node) == []
    [notice] = await outbound_rows(node)
    assert (notice.kind, notice.recipient) == ("notice", "bob@example.com")
    [mail] = await sink.wait_for(1)
    assert mail.rcpt_tos == ["bob@example.com"]
    assert mail.message["Subject"] == "[Rejected] Issue issue-1"
    assert mail.message["Auto-Submitted"] == "auto-replied"
    assert "was sent to someone else" in mail.text
    assert "alice" not in mail.text.lower()  # the owner's address is not given away


async def test_forwarded_reply_from_an_unverified_outsider_gets_no_notice(node: Node) -> None:
    thread = await make_thread(node)
    # Alice forwarded her notification; Dave, whose domain publishes no SPF, answers it.
    row = await deliver(
        node,
        "dave@nowhere.test",
        thread.addresses["alice"],
        "Chiming in\n\n> Alice wrote:\n> forwarded text",
    )
    assert row.status == InboundStatus.rejected
    assert outcome(row)["code"] == "not_owner"
    assert outcome(row)["notice"] == {
        "sent": False,
        "why": "the From address passed neither SPF nor aligned DKIM: "
        "a notice could be backscatter",
    }
    assert await outbound_rows(node) == []


async def test_a_sender_gets_at_most_one_notice_an_hour(node: Node, sink: SmtpSink) -> None:
    thread = await make_thread(node)
    first = await deliver(node, "bob@example.com", thread.addresses["alice"], "one")
    second = await deliver(node, "bob@example.com", thread.addresses["alice"], "two")
    assert outcome(first)["notice"]["sent"] is True
    assert outcome(second)["notice"]["sent"] is False
    assert "already sent a notice" in outcome(second)["notice"]["why"]
    assert [r.kind for r in await outbound_rows(node)] == ["notice"]


async def test_empty_reply_is_explained_to_a_verified_sender(node: Node, sink: SmtpSink) -> None:
    thread = await make_thread(node)
    row = await deliver(
        node,
        "alice@example.com",
        thread.addresses["alice"],
        "On Mon, Bob wrote:\n> the original text\n",
    )
    assert row.status == InboundStatus.rejected
    assert outcome(row)["code"] == "empty_reply"
    [mail] = await sink.wait_for(1)
    assert "no new text in your reply" in mail.text


async def test_sender_alias_may_post_as_the_participant(node: Node) -> None:
    thread = await make_thread(node)
    row = await deliver(node, "Alice.Work@example.com", thread.addresses["alice"], "From work")
    assert row.status == InboundStatus.delivered, row.reason
    assert [c.body for c in await comments(node)] == ["From work"]


async def test_case_of_the_from_address_does_not_matter(node: Node) -> None:
    thread = await make_thread(node)
    row = await deliver(node, "ALICE@Example.COM", thread.addresses["alice"], "Loud")
    assert row.status == InboundStatus.delivered, row.reason


async def test_standard_policy_accepts_a_domain_without_dmarc(node: Node) -> None:
    # The default: the token is the credential; a domain that publishes no DMARC is not
    # refused for it (only an enforced DMARC failure is).
    thread = await make_thread(node, domain="example.net")
    row = await deliver(node, "alice@example.net", thread.addresses["alice"], "Fine", ip=FOREIGN_IP)
    assert row.status == InboundStatus.delivered, row.reason
    assert (row.authentication or {})["spf"] == "fail"


async def test_strict_policy_refuses_a_sender_without_dmarc_pass(node: Node) -> None:
    thread = await make_thread(node, bot="strict-comments", domain="example.net")
    row = await deliver(node, "alice@example.net", thread.addresses["alice"], "Hello")
    assert row.status == InboundStatus.rejected
    assert outcome(row)["code"] == "unauthenticated"
    assert "requires DMARC pass" in (row.reason or "")


async def test_strict_policy_accepts_an_aligned_dkim_signature(node: Node) -> None:
    thread = await make_thread(node, bot="strict-comments")
    raw = dkim_sign(build_mail("alice@example.com", thread.addresses["alice"], "Signed"))
    # From a foreign IP SPF fails, but the From domain's own signature carries it.
    row = await deliver(
        node, "alice@example.com", thread.addresses["alice"], "", raw=raw, ip=FOREIGN_IP
    )
    assert row.status == InboundStatus.delivered, row.reason


async def test_open_policy_lets_anyone_post_through_the_address(node: Node) -> None:
    thread = await make_thread(node, bot="open-comments")
    row = await deliver(node, "stranger@example.net", thread.addresses["alice"], "Hi all")
    assert row.status == InboundStatus.delivered, row.reason
