"""Spam filtering with a real spamd, over real SMTP on loopback.

spamd is Debian's (``spamassassin`` + ``spamd``), started by :mod:`mailbot.testing.spamd` on a
free port with a configuration that needs no network. One spamd serves the module; the tests
that stop it mid-test start their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailbot import Bot, InboundMail, Mailbot
from mailbot.bots.comments import CommentsBot
from mailbot.serve import Node, running
from mailbot.spam import quarantine
from mailbot.spam.client import SpamChecker
from mailbot.store.models import Comment, InboundMessage, InboundStatus
from mailbot.testing import (
    SmtpSink,
    build_mail,
    make_thread,
    reply,
    settings_for,
    smtp_send,
    wait_for_status,
)
from mailbot.testing.spamd import GTUBE, Spamd, spamd_binary
from mailbot.web import views

UNSCANNED = frozenset({InboundStatus.unscanned})


class Helpdesk(Bot):
    """A route open to anyone, so stricter than replies from known participants."""

    name = "helpdesk"
    spam_quarantine_score = -50.0  # so strict that every message is held (the test's point)
    spam_reject_score = 500.0

    async def process(self, mail: InboundMail) -> None:
        self.ctx.outcome["helpdesk"] = mail.subject


# Only the comments bot: no reject score anywhere, so the worker scans (not DATA time).
app = Mailbot(bots=[CommentsBot])
helpdesk_app = Mailbot(bots=[CommentsBot], routes=[("support", Helpdesk)])


def _need_spamd() -> None:
    if spamd_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("spamd is missing: CI must install Debian's spamassassin and spamd")
        pytest.skip("spamd is not installed (Debian: apt-get install spamassassin spamd)")


@pytest.fixture(scope="module")
def spamd() -> Iterator[Spamd]:
    _need_spamd()
    with Spamd() as started:
        yield started


@pytest.fixture
def own_spamd() -> Iterator[Spamd]:
    """A spamd of this test's own, to stop and start."""
    _need_spamd()
    with Spamd() as started:
        yield started


@pytest.fixture
async def spam_node(tmp_path: Path, sink: SmtpSink, spamd: Spamd) -> AsyncIterator[Node]:
    async with running(settings_for(tmp_path, sink, spamd=spamd.address), app) as started:
        yield started


def _gtube(sender: str, to: str) -> bytes:
    return build_mail(sender, to, f"Cheap offer inside.\n\n{GTUBE}\n", subject="Re: offer")


async def _gtube_from_alice(node: Node, address: str | None = None) -> InboundMessage:
    """GTUBE from Alice through her reply address (a new thread's unless given), handled."""
    if address is None:
        address = (await make_thread(node)).addresses["alice"]
    return await reply(node, "alice@example.com", address, _gtube("alice@example.com", address))


async def _json(node: Node, inbound_id: int) -> dict[str, Any]:
    async with node.sessions() as session:
        data = await views.inbound_one(session, inbound_id)
    assert data is not None
    return data


async def _comments(node: Node) -> list[Comment]:
    async with node.sessions() as session:
        return list(await session.scalars(select(Comment)))


async def _http_json(node: Node, path: str) -> Any:
    url = f"http://127.0.0.1:{node.http_port}{path}"

    def fetch() -> Any:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    return await asyncio.to_thread(fetch)


@pytest.mark.spamd
async def test_gtube_is_quarantined_with_its_rule_listed_and_never_reaches_the_bot(
    spam_node: Node, sink: SmtpSink
) -> None:
    row = await _gtube_from_alice(spam_node)
    assert row.status == InboundStatus.quarantined
    assert row.reason is not None and "GTUBE" in row.reason
    spam = (await _http_json(spam_node, f"/api/messages/{row.id}"))["spam"]
    assert spam["scanned"] is True and spam["action"] == "quarantine"
    assert spam["score"] >= 1000 > spam["threshold"] == spam["quarantine_score"] == 5.0
    gtube = next(rule for rule in spam["rules"] if rule["name"] == "GTUBE")
    assert gtube["score"] == 1000.0
    assert "Generic Test for Unsolicited Bulk Email" in gtube["description"]
    assert await _comments(spam_node) == []
    assert sink.received == []


@pytest.mark.spamd
async def test_normal_reply_is_delivered_with_a_score_below_the_threshold(
    spam_node: Node, sink: SmtpSink
) -> None:
    thread = await make_thread(spam_node)
    address = thread.addresses["alice"]
    raw = build_mail("Alice <alice@example.com>", address, "Agreed, let's ship it on Monday.")
    result = await smtp_send(spam_node.smtp_port, "alice@example.com", [address], raw)
    row = await wait_for_status(spam_node.sessions, result.inbound_id)
    assert row.status == InboundStatus.delivered, row.reason
    spam = (await _json(spam_node, result.inbound_id))["spam"]
    assert spam["scanned"] is True and spam["action"] == "deliver"
    assert spam["score"] < spam["threshold"] == 5.0
    assert all({"name", "score", "description"} <= set(rule) for rule in spam["rules"])
    assert [c.body for c in await _comments(spam_node)] == ["Agreed, let's ship it on Monday."]
    await sink.wait_for(2)  # bob and carol are told


@pytest.mark.spamd
async def test_reject_score_hit_gets_550_at_data_and_nothing_is_stored(
    tmp_path: Path, sink: SmtpSink, spamd: Spamd
) -> None:
    settings = settings_for(tmp_path, sink, spamd=spamd.address, spam_reject_score=20.0)
    async with running(settings, app) as node:
        thread = await make_thread(node)
        address = thread.addresses["alice"]
        refused = await smtp_send(
            node.smtp_port, "alice@example.com", [address], _gtube("alice@example.com", address)
        )
        assert refused.data_code == 550
        assert refused.data_message.startswith("5.7.1")
        assert "spam" in refused.data_message
        async with node.sessions() as session:
            assert await session.scalar(select(InboundMessage.id)) is None
        # A normal reply is scanned at DATA time too, and that verdict is the one kept.
        raw = build_mail("alice@example.com", address, "Fine by me.")
        accepted = await smtp_send(node.smtp_port, "alice@example.com", [address], raw)
        row = await wait_for_status(node.sessions, accepted.inbound_id)
        assert row.status == InboundStatus.delivered
        assert row.spam is not None and row.spam["reject_score"] == 20.0


@pytest.mark.spamd
async def test_route_thresholds_override_the_node_defaults(
    tmp_path: Path, sink: SmtpSink, spamd: Spamd
) -> None:
    """support@ (Helpdesk) refuses GTUBE at DATA and holds even a clean mail; a reply address
    (the comments bot, node defaults) accepts GTUBE into quarantine."""
    settings = settings_for(tmp_path, sink, spamd=spamd.address)
    async with running(settings, helpdesk_app) as node:
        await _route_thresholds(node)


async def _route_thresholds(spam_node: Node) -> None:
    thread = await make_thread(spam_node)
    reply_to = thread.addresses["alice"]
    support = f"support@{spam_node.settings.domain}"
    refused = await smtp_send(
        spam_node.smtp_port, "x@example.com", [support], _gtube("x@example.com", support)
    )
    assert refused.data_code == 550
    # With both recipients, the strictest reject score counts.
    both = await smtp_send(
        spam_node.smtp_port,
        "alice@example.com",
        [reply_to, support],
        _gtube("alice@example.com", reply_to),
    )
    assert both.data_code == 550
    alone = await smtp_send(
        spam_node.smtp_port, "alice@example.com", [reply_to], _gtube("alice@example.com", reply_to)
    )
    assert alone.data_code == 250
    assert (await wait_for_status(spam_node.sessions, alone.inbound_id)).status == "quarantined"

    clean = build_mail("x@example.com", support, "How do I reset my password?")
    held = await smtp_send(spam_node.smtp_port, "x@example.com", [support], clean)
    row = await wait_for_status(spam_node.sessions, held.inbound_id)
    assert row.status == InboundStatus.quarantined
    assert row.spam is not None and row.spam["quarantine_score"] == -50.0
    assert row.spam["score"] < row.spam["threshold"]


@pytest.mark.spamd
async def test_spamd_stopped_mid_test_gives_451_in_tempfail_mode(
    tmp_path: Path, sink: SmtpSink, own_spamd: Spamd
) -> None:
    settings = settings_for(tmp_path, sink, spamd=own_spamd.address, spamd_down="tempfail")
    async with running(settings, app) as node:
        thread = await make_thread(node)
        address = thread.addresses["alice"]
        raw = build_mail("alice@example.com", address, "Sent while spamd is down.")
        first = await smtp_send(node.smtp_port, "alice@example.com", [address], raw)
        assert first.data_code == 250
        own_spamd.stop()
        refused = await smtp_send(node.smtp_port, "alice@example.com", [address], raw)
        assert refused.data_code == 451
        assert refused.data_message.startswith("4.7.1")
        own_spamd.start()
        retried = await smtp_send(node.smtp_port, "alice@example.com", [address], raw)
        assert retried.data_code == 250
        row = await wait_for_status(node.sessions, retried.inbound_id)
        assert row.spam is not None and row.spam["scanned"] is True
        async with node.sessions() as session:
            ids = list(await session.scalars(select(InboundMessage.id)))
        assert ids == [first.inbound_id, retried.inbound_id]  # the refused one left no row


@pytest.mark.spamd
async def test_mail_accepted_while_spamd_is_down_waits_unscanned_then_is_delivered(
    tmp_path: Path, sink: SmtpSink, own_spamd: Spamd
) -> None:
    settings = settings_for(
        tmp_path, sink, spamd=own_spamd.address, spamd_down="accept", spamd_recheck_seconds=0.2
    )
    async with running(settings, app) as node:
        thread = await make_thread(node)
        address = thread.addresses["alice"]
        own_spamd.stop()
        raw = build_mail("alice@example.com", address, "Written while spamd was away.")
        result = await smtp_send(node.smtp_port, "alice@example.com", [address], raw)
        assert result.data_code == 250
        row = await wait_for_status(node.sessions, result.inbound_id, UNSCANNED)
        assert "scanned again when spamd answers" in (row.reason or "")
        data = await _json(node, result.inbound_id)
        assert data["spam"]["scanned"] is False and "not scanned" in data["spam"]["reason"]
        assert await _comments(node) == []  # nothing unscanned reaches a bot
        own_spamd.start()
        row = await wait_for_status(node.sessions, result.inbound_id)
        assert row.status == InboundStatus.delivered, row.reason
        assert row.spam is not None and row.spam["scanned"] is True
        assert [c.body for c in await _comments(node)] == ["Written while spamd was away."]


async def test_silent_spamd_times_out_into_451_in_tempfail_mode(
    tmp_path: Path, sink: SmtpSink
) -> None:
    """A spamd that accepts connections and never answers (hung, overloaded)."""
    held: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda _r, w: held.append(w), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    settings = settings_for(
        tmp_path, sink, spamd=f"127.0.0.1:{port}", spamd_down="tempfail", spamd_timeout=0.5
    )
    try:
        async with running(settings, app, work=False, http=False) as node:
            thread = await make_thread(node)
            address = thread.addresses["alice"]
            raw = build_mail("alice@example.com", address, "Anyone there?")
            refused = await smtp_send(node.smtp_port, "alice@example.com", [address], raw)
            assert (refused.data_code, refused.data_message[:5]) == (451, "4.7.1")
    finally:
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_a_hung_spamd_holds_up_neither_acceptance_nor_the_next_sender_in_accept_mode(
    tmp_path: Path, sink: SmtpSink
) -> None:
    """Scanning happens in the worker: 250 comes while the scan is still waiting on spamd."""
    held: list[asyncio.StreamWriter] = []
    hung = await asyncio.start_server(lambda _r, w: held.append(w), "127.0.0.1", 0)
    port = hung.sockets[0].getsockname()[1]
    settings = settings_for(tmp_path, sink, spamd=f"127.0.0.1:{port}", spamd_timeout=3.0)
    try:
        async with running(settings, app, http=False) as node:
            thread = await make_thread(node)
            address = thread.addresses["alice"]
            raw = build_mail("alice@example.com", address, "First.")
            first = await smtp_send(node.smtp_port, "alice@example.com", [address], raw)
            while not held:  # the worker's scan is now waiting on the hung spamd
                await asyncio.sleep(0.01)
            second = await smtp_send(
                node.smtp_port,
                "bob@example.com",
                [thread.addresses["bob"]],
                build_mail("bob@example.com", thread.addresses["bob"], "Second."),
            )
            assert first.data_code == second.data_code == 250
            async with node.sessions() as session:
                row = await session.get(InboundMessage, first.inbound_id)
            assert row is not None and row.status == InboundStatus.processing
            row = await wait_for_status(node.sessions, first.inbound_id, UNSCANNED)
            assert "timed out" in (row.reason or "")
    finally:
        for writer in held:
            writer.close()
        hung.close()
        await hung.wait_closed()


@pytest.mark.spamd
async def test_release_runs_the_stored_message_through_the_pipeline_again(
    spam_node: Node, sink: SmtpSink
) -> None:
    quarantined = await _gtube_from_alice(spam_node)
    assert quarantined.status == "quarantined"
    await quarantine.release(spam_node.sessions, quarantined.id)
    spam_node.wake_worker.set()
    row = await wait_for_status(spam_node.sessions, quarantined.id)
    assert row.status == InboundStatus.delivered, row.reason
    assert row.spam is not None and row.spam["action"] == "released"
    assert row.spam["score"] >= 1000  # the verdict is kept, only overruled
    comments = await _comments(spam_node)
    assert len(comments) == 1 and GTUBE in comments[0].body
    with pytest.raises(LookupError, match="delivered, not quarantined"):
        await quarantine.release(spam_node.sessions, quarantined.id)


@pytest.mark.spamd
async def test_delete_removes_quarantined_mail_and_nothing_else(spam_node: Node) -> None:
    thread = await make_thread(spam_node)
    address = thread.addresses["alice"]
    spam = await smtp_send(
        spam_node.smtp_port, "alice@example.com", [address], _gtube("alice@example.com", address)
    )
    good = await smtp_send(
        spam_node.smtp_port,
        "alice@example.com",
        [address],
        build_mail("alice@example.com", address, "Keep me."),
    )
    await wait_for_status(spam_node.sessions, spam.inbound_id)
    await wait_for_status(spam_node.sessions, good.inbound_id)
    with pytest.raises(LookupError, match="not quarantined"):
        await quarantine.delete(spam_node.sessions, good.inbound_id)
    await quarantine.delete(spam_node.sessions, spam.inbound_id)
    async with spam_node.sessions() as session:
        left = list(await session.scalars(select(InboundMessage.id)))
    assert left == [good.inbound_id]


@pytest.mark.spamd
async def test_learning_teaches_spamd_bayes_through_tell(spam_node: Node, spamd: Spamd) -> None:
    thread = await make_thread(spam_node)
    address = thread.addresses["alice"]
    raw = build_mail("alice@example.com", address, "Limited offer: replica watches, act now!")
    result = await smtp_send(spam_node.smtp_port, "alice@example.com", [address], raw)
    await wait_for_status(spam_node.sessions, result.inbound_id)
    before = await asyncio.to_thread(spamd.bayes_counts)
    checker = SpamChecker(spamd.address)
    record = await quarantine.learn(spam_node.sessions, checker, result.inbound_id, "spam")
    assert record["new_to_spamd"] is True
    again = await quarantine.learn(spam_node.sessions, checker, result.inbound_id, "spam")
    assert again["new_to_spamd"] is False  # spamd had already learned this one
    after = await asyncio.to_thread(spamd.bayes_counts)
    assert after["nspam"] == before["nspam"] + 1
    assert (await _json(spam_node, result.inbound_id))["spam"]["learned"]["as"] == "spam"
    with pytest.raises(LookupError):
        await quarantine.learn(spam_node.sessions, checker, 999_999, "ham")


async def test_without_spamd_the_json_and_health_say_mail_is_not_scanned(
    node: Node, sink: SmtpSink
) -> None:
    thread = await make_thread(node)
    address = thread.addresses["alice"]
    raw = build_mail("alice@example.com", address, "No spamd here.")
    result = await smtp_send(node.smtp_port, "alice@example.com", [address], raw)
    row = await wait_for_status(node.sessions, result.inbound_id)
    assert row.status == InboundStatus.delivered
    spam = (await _http_json(node, "/api/messages"))[0]["spam"]
    assert spam == {"scanned": False, "reason": spam["reason"]}
    assert "spam scanning is off" in spam["reason"]
    assert "not scanned" in (await _http_json(node, "/health"))["spam_scanning"]


def test_spamd_address_without_a_port_is_a_config_error() -> None:
    from mailbot.errors import ConfigError

    with pytest.raises(ConfigError, match="host:port"):
        SpamChecker("localhost")
    assert SpamChecker("[::1]:783").host == "::1"


async def _mailbot(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mailbot",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.spamd
async def test_quarantine_and_learn_commands_work_from_the_command_line(
    tmp_path: Path, sink: SmtpSink, spamd: Spamd
) -> None:
    # The node stores and quarantines; the commands are run by a separate process, as an
    # operator would, against the same database and spamd.
    settings = settings_for(tmp_path, sink, spamd=spamd.address, poll_seconds=60.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(
        MAILBOT_DATABASE_URL=settings.database_url,
        MAILBOT_SPAMD=spamd.address,
        MAILBOT_CPU_WORKERS="0",
        MAILBOT_CONFIG="",  # no mailbot.toml, wherever the tests run
    )
    async with running(settings, app, http=False) as node:
        thread = await make_thread(node)
        address = thread.addresses["alice"]
        ids = []
        for _ in range(2):
            sent = await _gtube_from_alice(node, address)
            assert sent.status == "quarantined"
            ids.append(sent.id)

        code, out, _ = await _mailbot(env, "quarantine", "list", "--json")
        listed = [json.loads(line) for line in out.splitlines()]
        assert code == 0 and sorted(item["id"] for item in listed) == ids
        code, out, _ = await _mailbot(env, "quarantine", "list")
        assert code == 0 and "GTUBE" in out

        code, out, err = await _mailbot(env, "spam", "learn", "--spam", str(ids[0]), "--json")
        assert code == 0, err
        assert json.loads(out)["as"] == "spam"

        code, out, err = await _mailbot(env, "quarantine", "release", str(ids[0]))
        assert code == 0, err
        assert out.startswith(f"{ids[0]} delivered")
        code, _, err = await _mailbot(env, "quarantine", "delete", str(ids[1]))
        assert code == 0, err
        code, _, err = await _mailbot(env, "quarantine", "delete", str(ids[0]))
        assert code == 1 and "delivered, not quarantined" in err

        async with node.sessions() as session:
            rows = list(await session.scalars(select(InboundMessage)))
        assert [(r.id, r.status) for r in rows] == [(ids[0], InboundStatus.delivered)]
        assert rows[0].spam is not None and rows[0].spam["learned"]["as"] == "spam"
        assert [c.inbound_id for c in await _comments(node)] == [ids[0]]
