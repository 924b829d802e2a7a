"""Group commit at acceptance: messages that arrive together share one transaction; each
sender is answered only after its own row committed, and a failed commit is a 451."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot.bots.default import app
from mailbot.serve import Node, running
from mailbot.store import spool
from mailbot.store.db import Sessions, database, upgrade
from mailbot.store.group_commit import GroupCommit
from mailbot.store.models import InboundMessage
from mailbot.testing import build_mail, make_thread, settings_for, smtp_send

POISON = "poison@example.com"


def _envelope(sender: str = "a@example.com") -> spool.Envelope:
    return spool.Envelope(sender, ["reply+x@example.org"])


def _raw(n: int) -> bytes:
    return build_mail("a@example.com", "reply+x@example.org", f"message {n}")


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[Sessions]:
    async with database(settings_for(tmp_path).database_url) as (engine, made):
        await upgrade(engine)
        yield made


class Gate:
    """Sessions whose first transaction waits until the test opens the gate."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.opened = asyncio.Event()
        self.entered = asyncio.Event()
        self.calls = 0

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[AsyncSession]:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            await self.opened.wait()
        async with self.sessions() as session:
            yield session


async def _count(sessions: Sessions) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(InboundMessage)) or 0)


@asynccontextmanager
async def refusing_inserts(sessions: Sessions, only: str | None = None) -> AsyncIterator[None]:
    """The database itself (a trigger) refuses the rows of ``only`` (a sender), or every row."""
    when = "1" if only is None else f"NEW.mail_from = '{only}'"
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                f"CREATE TRIGGER refuse BEFORE INSERT ON inbound_messages WHEN {when} "
                "BEGIN SELECT RAISE(ABORT, 'the database refused this row'); END"
            )
        )
    try:
        yield
    finally:
        async with sessions() as session, session.begin():
            await session.execute(text("DROP TRIGGER refuse"))


async def test_messages_arriving_during_a_commit_share_the_next_one(sessions: Sessions) -> None:
    gate = Gate(sessions)
    async with GroupCommit(gate) as commits:
        first = asyncio.create_task(commits.store(_raw(0), _envelope()))
        await gate.entered.wait()  # the first row's commit is under way, and held there
        rest = [asyncio.create_task(commits.store(_raw(n), _envelope())) for n in range(1, 6)]
        await asyncio.sleep(0)
        assert not any(task.done() for task in [first, *rest])  # nobody answered before commit
        gate.opened.set()
        ids = await asyncio.gather(first, *rest)
    assert len(set(ids)) == 6
    assert commits.commits == 2  # the first alone, the five that waited for it together
    assert await _count(sessions) == 6


async def test_a_commit_of_several_rows_marks_a_burst_and_one_of_one_row_does_not(
    sessions: Sessions, tmp_path: Path
) -> None:
    def mark() -> float:
        path = next(tmp_path.rglob("*-writer-wanted"))
        raw = path.read_bytes()[:16]
        return float(struct.unpack("dq", raw)[0]) if len(raw) == 16 else 0.0

    async with GroupCommit(sessions) as commits:
        before = time.monotonic()
        await commits.store(_raw(0), _envelope())  # alone: mail arriving one at a time
        assert mark() < before
        gate = Gate(sessions)
        async with GroupCommit(gate) as held:
            first = asyncio.create_task(held.store(_raw(1), _envelope()))
            await gate.entered.wait()
            rest = [asyncio.create_task(held.store(_raw(n), _envelope())) for n in (2, 3)]
            await asyncio.sleep(0)
            gate.opened.set()
            await asyncio.gather(first, *rest)
            after_two = time.monotonic()
        assert held.commits == 2
        assert before < mark() <= after_two  # the two that arrived together: more coming


async def test_a_row_the_database_refuses_costs_only_its_own_sender(sessions: Sessions) -> None:
    gate = Gate(sessions)
    async with refusing_inserts(sessions, only=POISON):
        async with GroupCommit(gate) as commits:
            first = asyncio.create_task(commits.store(_raw(0), _envelope()))
            await gate.entered.wait()
            batch = [
                asyncio.create_task(commits.store(_raw(1), _envelope())),
                asyncio.create_task(commits.store(_raw(2), _envelope(POISON))),
                asyncio.create_task(commits.store(_raw(3), _envelope())),
            ]
            gate.opened.set()
            results = await asyncio.gather(first, *batch, return_exceptions=True)
    assert [isinstance(r, int) for r in results] == [True, True, False, True]
    assert isinstance(results[2], IntegrityError)  # what the trigger's ABORT is, to SQLAlchemy
    async with sessions() as session:
        senders = (await session.scalars(select(InboundMessage.mail_from))).all()
    assert sorted(senders) == ["a@example.com"] * 3


async def test_a_database_that_is_away_fails_the_batch_at_once_not_row_by_row(
    sessions: Sessions,
) -> None:
    gate = Gate(sessions)
    opened = 0

    @asynccontextmanager
    async def away() -> AsyncIterator[AsyncSession]:
        nonlocal opened
        opened += 1
        if opened == 1:
            async with gate() as session:  # the first commit is held, then goes through
                yield session
            return
        raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))
        yield  # pragma: no cover - makes this a generator

    async with GroupCommit(away) as commits:
        first = asyncio.create_task(commits.store(_raw(0), _envelope()))
        await gate.entered.wait()
        batch = [asyncio.create_task(commits.store(_raw(n), _envelope())) for n in range(1, 4)]
        await asyncio.sleep(0)
        gate.opened.set()
        results = await asyncio.gather(first, *batch, return_exceptions=True)
    assert isinstance(results[0], int)
    assert all(isinstance(r, OperationalError) for r in results[1:])
    assert opened == 2  # the three waiting rows were tried once, together


async def test_closing_commits_every_row_still_waiting(sessions: Sessions) -> None:
    gate = Gate(sessions)
    commits = GroupCommit(gate)
    await commits.__aenter__()
    stores = [asyncio.create_task(commits.store(_raw(n), _envelope())) for n in range(4)]
    await gate.entered.wait()
    closing = asyncio.create_task(commits.__aexit__(None, None, None))
    await asyncio.sleep(0)
    gate.opened.set()
    await closing
    assert all(isinstance(i, int) for i in await asyncio.gather(*stores))
    assert await _count(sessions) == 4


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with running(settings_for(tmp_path), app, http=False) as started:
        yield started


async def test_a_sender_whose_row_did_not_commit_is_told_to_retry(node: Node) -> None:
    thread = await make_thread(node)
    address = thread.addresses["alice"]
    async with refusing_inserts(node.sessions):
        refused = await smtp_send(node.smtp_port, "alice@example.com", [address], _raw(1))
    assert (refused.data_code, refused.data_message.split()[0]) == (451, "4.3.0")
    assert await _count(node.sessions) == 0
    accepted = await smtp_send(node.smtp_port, "alice@example.com", [address], _raw(2))
    assert accepted.data_code == 250
    assert await _count(node.sessions) == 1


async def test_concurrent_senders_each_get_their_own_committed_row(node: Node) -> None:
    thread = await make_thread(node)
    address = thread.addresses["alice"]
    results = await asyncio.gather(
        *(smtp_send(node.smtp_port, "alice@example.com", [address], _raw(n)) for n in range(20))
    )
    ids = [result.inbound_id for result in results]
    assert len(set(ids)) == 20
    async with node.sessions() as session:
        stored = set((await session.scalars(select(InboundMessage.id))).all())
    assert set(ids) == stored
