"""Phase 2 in batches (mailbot/store/finish.py ``together``, mailbot/pipeline/batches.py).

Messages ready at the same moment share one transaction and one commit; each still ends in
its own status, a failure rolls back only its own writes, a batch that cannot commit is done
again one by one, and the order messages were handed in is the order they are worked on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot.config import Settings
from mailbot.errors import Rejection
from mailbot.pipeline.batches import Batches
from mailbot.status import InboundStatus as S
from mailbot.status import RefusalCode
from mailbot.store import conversations, finish, spool, sqlite_driver
from mailbot.store.db import Sessions, database, upgrade, writer_wanted
from mailbot.store.models import Conversation, InboundMessage
from mailbot.testing import build_mail, settings_for


@asynccontextmanager
async def _claimed_rows(
    tmp_path: Path, count: int
) -> AsyncIterator[tuple[Sessions, Settings, list[int], list[int]]]:
    """Sessions on a database with ``count`` claimed rows; the last item grows by one with
    each commit after the claim."""
    settings = settings_for(tmp_path, max_attempts=3)
    async with database(settings.database_url) as (engine, sessions):
        await upgrade(engine)
        commits: list[int] = []
        event.listen(engine.sync_engine, "commit", lambda _conn: commits.append(1))
        ids = []
        for n in range(count):
            raw = build_mail("a@example.com", "reply+x@example.org", f"message {n}")
            envelope = spool.Envelope("a@example.com", ["reply+x@example.org"])
            ids.append(await spool.store(sessions, raw, envelope))
        assert sorted(c.id for c in await spool.claim(sessions, count)) == ids
        commits.clear()
        yield sessions, settings, ids, commits


async def _row(sessions: Sessions, inbound_id: int) -> InboundMessage:
    async with sessions() as session:
        row = await session.get(InboundMessage, inbound_id)
        assert row is not None
        return row


def _writes(text: str, then: BaseException | None = None) -> finish.Work:
    async def work(_session: AsyncSession, row: InboundMessage) -> None:
        row.reply_text = text
        if then is not None:
            raise then

    return work


async def test_messages_of_one_batch_end_each_in_its_own_status_with_one_commit(
    tmp_path: Path,
) -> None:
    async with _claimed_rows(tmp_path, 3) as (sessions, settings, (first, second, third), commits):
        ended = await finish.together(
            sessions,
            settings,
            [
                (first, _writes("kept")),
                (second, _writes("kept too", Rejection("no", code=RefusalCode.not_owner))),
                (third, _writes("undone", RuntimeError("the bot broke"))),
            ],
        )
        assert [getattr(e, "id", e) for e in ended] == [first, second, third]
        assert commits == [1]
        delivered, refused, failed = [await _row(sessions, i) for i in (first, second, third)]
        assert (delivered.status, delivered.reply_text) == (S.delivered, "kept")
        # A refusal keeps what was stored before it, as in a transaction of its own.
        assert (refused.status, refused.reason, refused.reply_text) == (
            S.rejected,
            "no",
            "kept too",
        )
        # A failure undoes only its own writes, and is retried later.
        assert failed.status == S.pending and failed.reply_text is None
        assert failed.attempts == 1 and "the bot broke" in (failed.reason or "")


async def test_a_row_no_longer_ours_is_left_alone_and_the_others_go_on(tmp_path: Path) -> None:
    async with _claimed_rows(tmp_path, 2) as (sessions, settings, (first, second), commits):
        await spool.requeue(sessions, [first])  # taken back meanwhile
        ended = await finish.together(
            sessions, settings, [(first, _writes("no")), (second, _writes("yes"))]
        )
        assert isinstance(ended[0], spool.ClaimLost)
        assert (await _row(sessions, first)).status == S.pending
        assert (await _row(sessions, first)).reply_text is None
        assert (await _row(sessions, second)).status == S.delivered


async def test_a_batch_that_cannot_commit_is_done_again_one_by_one_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _claimed_rows(tmp_path, 3) as (sessions, settings, ids, commits):
        commit = AsyncSession.commit
        failed: list[int] = []

        async def first_commit_fails(session: AsyncSession) -> None:
            if not failed:
                failed.append(1)
                raise OSError("disk full at the commit")
            await commit(session)

        monkeypatch.setattr(AsyncSession, "commit", first_commit_fails)
        batches = Batches(sessions, settings)
        worked: list[int] = []

        def work(n: int) -> finish.Work:
            async def run(_session: AsyncSession, row: InboundMessage) -> None:
                worked.append(n)
                row.reply_text = f"text {n}"

            return run

        running = asyncio.create_task(batches.run())
        try:
            ended = await asyncio.gather(*(batches.finish(i, work(i)) for i in ids))
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        # Worked on in the failed batch, then once more each, alone, in the same order.
        assert failed and worked == ids + ids
        for inbound_id, row in zip(ids, ended, strict=True):
            assert isinstance(row, InboundMessage) and row.id == inbound_id
            stored = await _row(sessions, inbound_id)
            assert (stored.status, stored.reply_text) == (S.delivered, f"text {inbound_id}")


async def test_work_is_done_in_the_order_it_was_handed_in_and_shares_a_transaction(
    tmp_path: Path,
) -> None:
    async with _claimed_rows(tmp_path, 4) as (sessions, settings, ids, commits):
        batches = Batches(sessions, settings)
        worked: list[int] = []
        queued: list[int] = []

        def work(n: int) -> finish.Work:
            async def run(_session: AsyncSession, _row: InboundMessage) -> None:
                worked.append(n)

            return run

        # All handed in before the batcher runs: one transaction for the four.
        waits = [
            asyncio.create_task(batches.finish(i, work(i), partial(queued.append, i)))
            for i in reversed(ids)
        ]
        await asyncio.sleep(0)
        assert queued == list(reversed(ids))  # in line as soon as handed in
        running = asyncio.create_task(batches.run())
        try:
            await asyncio.gather(*waits)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        assert worked == list(reversed(ids))
        assert commits == [1]


async def test_a_batch_ends_early_for_a_sender_waiting_on_the_smtp_server_s_commit(
    tmp_path: Path,
) -> None:
    """On SQLite the SMTP server's group commit (an urgent writer) waits for the one writer:
    the batch commits what it has done and lets it go first; the rest follow, in order."""
    async with _claimed_rows(tmp_path, 4) as (sessions, settings, ids, commits):
        url = settings.database_url
        async with database(url) as (_engine, smtp_sessions):
            batches = Batches(sessions, settings)
            worked: list[int] = []
            stored: list[int] = []

            async def urgent_store() -> None:
                token = sqlite_driver.urgent.set(True)
                try:
                    raw = build_mail("b@example.com", "reply+x@example.org", "urgent")
                    envelope = spool.Envelope("b@example.com", ["reply+x@example.org"])
                    stored.append(await spool.store(smtp_sessions, raw, envelope))
                finally:
                    sqlite_driver.urgent.reset(token)

            def work(n: int) -> finish.Work:
                async def run(session: AsyncSession, _row: InboundMessage) -> None:
                    worked.append(n)
                    if n == ids[0]:  # a sender's commit starts waiting meanwhile
                        storing.append(asyncio.create_task(urgent_store()))
                        while not await writer_wanted(session):
                            await asyncio.sleep(0.01)

                return run

            storing: list[asyncio.Task[None]] = []
            waits = [asyncio.create_task(batches.finish(i, work(i))) for i in ids]
            await asyncio.sleep(0)
            running = asyncio.create_task(batches.run())
            try:
                ended = await asyncio.gather(*waits)
                await asyncio.gather(*storing)
            finally:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
        assert worked == ids  # each once, in the order handed in
        assert [getattr(e, "id", e) for e in ended] == ids
        assert len(stored) == 1
        # The first alone (then the sender's row), the other three together.
        assert commits == [1, 1]
        for inbound_id in ids:
            assert (await _row(sessions, inbound_id)).status == S.delivered


async def test_batches_on_two_nodes_never_wait_for_each_other_s_conversations(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two nodes' batches that take the same two conversations in opposite orders: past its
    first message a batch does not wait for a conversation the other holds (PostgreSQL would
    find a deadlock and abort one); it hands the message back, and the other goes on."""
    settings = settings_for(tmp_path, database_url=postgres_url, max_attempts=3)
    async with database(postgres_url) as (engine, sessions):
        await upgrade(engine)
        async with sessions() as session, session.begin():
            first = (await conversations.ensure(session, "first", "example.org")).id
            second = (await conversations.ensure(session, "second", "example.org")).id
        ids = []
        for n in range(4):
            raw = build_mail("a@example.com", "reply+x@example.org", f"message {n}")
            envelope = spool.Envelope("a@example.com", ["reply+x@example.org"])
            ids.append(await spool.store(sessions, raw, envelope))
        assert len(await spool.claim(sessions, 4)) == 4
        both_hold_one = asyncio.Barrier(2)

        def locking(conversation_id: int, then_wait: bool) -> finish.Work:
            async def work(session: AsyncSession, row: InboundMessage) -> None:
                conversation = await session.get(Conversation, conversation_id)
                assert conversation is not None
                await conversations.lock(session, conversation)
                row.reply_text = f"worked in {conversation.key}"
                if then_wait:  # each node holds one conversation before asking for the other
                    await asyncio.wait_for(both_hold_one.wait(), 30)

            return work

        one, two = await asyncio.wait_for(
            asyncio.gather(
                finish.together(
                    sessions,
                    settings,
                    [(ids[0], locking(first, True)), (ids[1], locking(second, False))],
                ),
                finish.together(
                    sessions,
                    settings,
                    [(ids[2], locking(second, True)), (ids[3], locking(first, False))],
                ),
            ),
            60,
        )
        # At least one handed its second message back; none failed, none was counted a try.
        assert len(one) + len(two) in (2, 3)
        handed_back = [ids[1]] if len(one) == 1 else []
        handed_back += [ids[3]] if len(two) == 1 else []
        for inbound_id in handed_back:
            row = await _row(sessions, inbound_id)
            assert (row.status, row.attempts, row.reply_text) == (S.processing, 0, None)
        # Handed in again, they go through.
        again = {ids[1]: locking(second, False), ids[3]: locking(first, False)}
        for inbound_id in handed_back:
            (ended,) = await finish.together(sessions, settings, [(inbound_id, again[inbound_id])])
            assert isinstance(ended, InboundMessage)
        for inbound_id in ids:
            row = await _row(sessions, inbound_id)
            assert (row.status, row.attempts) == (S.delivered, 1)
