"""Crash safety (issue #10): ``mailbot serve`` killed with SIGKILL again and again while mail
arrives over SMTP and the worker runs, restarted each time on the same database.

The client is an MTA in miniature: 16 sessions at once (so the server commits messages that
arrive together in one transaction, and a kill finds such a group commit under way), each
message sent until it gets 250, every try on a connection of its own and marked with an
``X-Attempt`` header. From what the client saw of each try:

- 250: the try is stored, and its message is acted on exactly once (one comment, one
  notification per other participant, queued and kept across the kills);
- refused (4xx or 5xx), or cut before the final dot went out: the try is not stored;
- cut after the final dot, before the answer: stored or not, both are right; a copy stored
  as well as a later accepted try is refused as a duplicate (its Message-ID), not acted on.

Every tenth message is big enough for the blob store, so a kill may also fall between a
blob's fsync and its row's commit. Kills come at random moments, and also on purpose while
tries await their 250 (a group commit under way) and while the worker has messages in hand.
The load runs until the last kill: 4 kills, 150 to 450 messages, 20-40 s a database on 2
cores. Analysis runs in a thread (``MAILBOT_CPU_WORKERS=0``): analyser processes would
outlive each killed node.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailbot.status import RefusalCode
from mailbot.store import blobs, spool
from mailbot.store.db import Sessions, database, upgrade
from mailbot.store.models import (
    Comment,
    InboundMessage,
    InboundStatus,
    OutboundMessage,
    OutboundStatus,
    utcnow,
)
from mailbot.testing import build_mail, make_thread, settings_for
from tests.test_cli import _free_port
from tests.test_several_nodes import (
    Served,
    Store,
    node_env,
    start_node,
    stop_node,
    wait_all_final,
)

SESSIONS = 16
# When each kill comes: tries awaiting their 250 (a group commit under way), the worker with
# messages in hand, or whenever the random wait ends.
KILLS = ("group commit", "worker", "any moment", "group commit")
# Every tenth message is over the blob threshold (256 KiB): its bytes go to the blob store,
# fsynced before the row that names them commits.
BIG_TAIL = "".join(f"\nline {n} of a long comment" for n in range(12_000))
SENDER = "alice@example.com"
OTHERS = ("bob@example.com", "carol@example.com")


@dataclass
class Client:
    """What the client saw, try by try (a try is ``"<message>.<attempt>"``)."""

    messages: int = 0  # messages 0, 1, ... were sent
    accepted: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)  # 4xx/5xx, or cut before the final dot
    unknown: set[str] = field(default_factory=set)  # cut after the final dot: no answer
    awaiting: set[str] = field(default_factory=set)  # final dot sent, answer not yet read
    in_data: set[str] = field(default_factory=set)  # DATA sent, answer not yet read
    given_up: dict[int, str] = field(default_factory=dict)  # 5xx: the message, the answer


async def _answer(reader: asyncio.StreamReader) -> tuple[int, str]:
    """One SMTP reply, every line of it: its code and its last line."""
    while True:
        line = await reader.readline()
        if len(line) < 4:
            raise ConnectionResetError("the server closed the connection")
        if line[3:4] != b"-":
            return int(line[:3]), line.decode(errors="replace").strip()


async def _try(port: int, address: str, message: int, attempt: int, seen: Client) -> str:
    """One try on a new connection: ``accepted``, ``refused``, ``unknown`` or ``given_up``."""
    name = f"{message}.{attempt}"
    raw = build_mail(
        SENDER,
        address,
        f"Comment {message}." + (BIG_TAIL if message % 10 == 0 else ""),
        message_id=f"<c{message}@crash.test>",
        headers={"X-Attempt": name},
    )
    dot_sent = False
    try:
        async with asyncio.timeout(30):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                commands = [b"EHLO client.test", f"MAIL FROM:<{SENDER}>".encode()]
                for command in [None, *commands, f"RCPT TO:<{address}>".encode(), b"DATA"]:
                    if command is not None:
                        writer.write(command + b"\r\n")
                    if command == b"DATA":
                        seen.in_data.add(name)
                    code, text = await _answer(reader)
                    if code >= 400:
                        return _refused(seen, message, name, code, text)
                body = re.sub(rb"(?m)^\.", b"..", raw.replace(b"\n", b"\r\n"))
                dot_sent = True  # from here on the server may have the whole message
                seen.awaiting.add(name)
                writer.write(body + b"\r\n.\r\n")
                code, text = await _answer(reader)
                if code >= 400:
                    return _refused(seen, message, name, code, text)
                assert code == 250, text
                seen.accepted.add(name)
                writer.write(b"QUIT\r\n")
                return "accepted"
            finally:
                seen.in_data.discard(name)
                seen.awaiting.discard(name)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, ConnectionError):
        if dot_sent:
            seen.unknown.add(name)
            return "unknown"
        seen.refused.add(name)
        return "refused"


def _refused(seen: Client, message: int, name: str, code: int, text: str) -> str:
    seen.refused.add(name)
    if code >= 500:
        seen.given_up[message] = text
        return "given_up"
    return "refused"


async def _deliver(port: int, address: str, seen: Client, stop: asyncio.Event) -> None:
    """One sending session: new messages until ``stop`` is set, each tried until 250 (or a
    5xx)."""
    while not stop.is_set():
        message = seen.messages
        seen.messages += 1
        for attempt in range(1, 500):
            outcome = await _try(port, address, message, attempt, seen)
            if outcome in ("accepted", "given_up"):
                break
            await asyncio.sleep(0.05)  # the server is down or busy: again soon
        else:
            raise AssertionError(f"message {message} never got through")


@dataclass
class Kill:
    kind: str
    in_data: int  # tries between DATA and its answer at the kill
    awaiting: int  # tries whose final dot was sent, awaiting 250, at the kill
    in_hand: int  # rows the dead node's worker had claimed


async def _in_hand(sessions: Sessions, since: datetime) -> int:
    """Rows ``processing`` under a claim made (or renewed) since ``since``: not the rows an
    earlier, killed node left behind."""
    async with sessions() as session:
        found = await session.scalar(
            select(func.count())
            .select_from(InboundMessage)
            .where(
                InboundMessage.status == InboundStatus.processing,
                InboundMessage.updated_at >= since,
            )
        )
    return int(found or 0)


async def _held_ids(sessions: Sessions) -> set[int]:
    async with sessions() as session:
        return set(await session.scalars(select(OutboundMessage.id)))


async def _kill_and_restart(
    node: Served, since: datetime, sessions: Sessions, seen: Client, kind: str
) -> tuple[Served, datetime, Kill]:
    """SIGKILL the node (started at ``since``) at a moment of ``kind``, note what it had
    under way, start it again."""
    async with asyncio.timeout(15):
        if kind == "group commit":  # tries awaiting their 250: a commit is under way
            while len(seen.awaiting) < 2:
                await asyncio.sleep(0.001)
        elif kind == "worker":  # the worker has messages in hand
            while await _in_hand(sessions, since) == 0:
                await asyncio.sleep(0.01)
    in_data, awaiting = len(seen.in_data), len(seen.awaiting)
    node.process.kill()
    await node.process.wait()
    kill = Kill(kind, in_data, awaiting, await _in_hand(sessions, since))
    since = utcnow()
    return await start_node(node.env, node.log, *node.args), since, kill


def _attempt_of(raw: bytes) -> str:
    value = BytesHeaderParser().parsebytes(raw)["X-Attempt"]
    assert value is not None
    return str(value)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'mailbot.db'}"
    return str(request.getfixturevalue("postgres_url"))


async def test_sigkill_under_load_loses_no_accepted_message_and_acts_on_each_once(
    tmp_path: Path, database_url: str
) -> None:
    rng = random.Random(20261124)
    seen = Client()
    kills: list[Kill] = []
    async with database(database_url) as (engine, sessions):
        await upgrade(engine)
        settings = settings_for(tmp_path, database_url=database_url)
        thread = await make_thread(Store(settings, sessions), people=("alice", "bob", "carol"))
        address = thread.addresses["alice"]
        port = _free_port()
        env = node_env(
            database_url, tmp_path, MAILBOT_SMTP_PORT=str(port), MAILBOT_LEASE_SECONDS="1"
        )
        since = utcnow()
        node = await start_node(env, tmp_path / "node.log")
        held_before_kills: set[int] = set()
        stop = asyncio.Event()
        sending = asyncio.gather(*(_deliver(port, address, seen, stop) for _ in range(SESSIONS)))
        try:
            for kind in KILLS:
                await asyncio.sleep(rng.uniform(0.2, 1.2))
                held_before_kills |= await _held_ids(sessions)
                node, since, kill = await _kill_and_restart(node, since, sessions, seen, kind)
                kills.append(kill)
            stop.set()  # the messages in hand are still sent until they get 250
            async with asyncio.timeout(120):
                await sending
            count = await _stored_count(sessions)
            # A bound on liveness, not a speed check: the load is as big as acceptance was
            # fast, and every tenth message is a big one (alone: about 28 a second).
            await wait_all_final(sessions, count, timeout=60 + count / 5)
        finally:
            sending.cancel()  # over by now, unless the test failed on the way
            await asyncio.wait([sending])
            await stop_node(node)

        async with sessions() as session:
            rows = (
                await session.execute(
                    select(
                        InboundMessage.id,
                        InboundMessage.status,
                        InboundMessage.message_id,
                        InboundMessage.outcome,
                        InboundMessage.raw_blob,
                    )
                )
            ).all()
            comments = [i for i in await session.scalars(select(Comment.inbound_id)) if i]
            outbound = (
                await session.execute(
                    select(
                        OutboundMessage.id,
                        OutboundMessage.inbound_id,
                        OutboundMessage.recipient,
                        OutboundMessage.status,
                    )
                )
            ).all()
        # Every stored try readable, from its row or from the blob store it names.
        store = blobs.for_settings(settings)
        raws = [await spool.load_raw(sessions, row.id, store) for row in rows]

    assert [k.kind for k in kills] == list(KILLS)
    # The kills hit what they were meant to: a group commit, and a worker, under way.
    assert any(k.awaiting >= 2 for k in kills if k.kind == "group commit"), kills
    assert any(k.in_hand > 0 for k in kills if k.kind == "worker"), kills
    assert seen.given_up == {}  # no 5xx: a crash is never a reason to refuse mail for good

    assert any(row.raw_blob for row in rows)  # big mail was among it
    stored = {_attempt_of(raw): row for row, raw in zip(rows, raws, strict=True)}
    assert len(stored) == len(rows)  # each try stored once at most
    assert seen.accepted <= stored.keys()  # every 250 was kept
    assert stored.keys() <= seen.accepted | seen.unknown  # nothing refused was stored
    assert not (stored.keys() & seen.refused)
    assert {int(name.split(".")[0]) for name in seen.accepted} == set(range(seen.messages))

    # Each message acted on once: one copy delivered, any other copy refused as a duplicate.
    by_message: dict[str, list[InboundStatus]] = defaultdict(list)
    for row in rows:
        by_message[row.message_id].append(row.status)
        if row.status != InboundStatus.delivered:
            assert row.status == InboundStatus.rejected, row
            assert row.outcome["code"] == RefusalCode.duplicate, row
    assert sorted(by_message) == sorted(f"<c{m}@crash.test>" for m in range(seen.messages))
    assert {statuses.count(InboundStatus.delivered) for statuses in by_message.values()} == {1}
    delivered = sorted(row.id for row in rows if row.status == InboundStatus.delivered)
    assert sorted(comments) == delivered
    # Every notification queued once, and none that was queued before a kill was lost.
    per_message = Counter((o.inbound_id, o.recipient) for o in outbound)
    assert set(per_message.values()) == {1}
    assert sorted(per_message) == sorted((i, person) for i in delivered for person in OTHERS)
    assert {o.status for o in outbound} == {OutboundStatus.held}
    assert held_before_kills <= {o.id for o in outbound}


async def _stored_count(sessions: Sessions) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(InboundMessage)) or 0)
