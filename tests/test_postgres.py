"""PostgreSQL as the shared store: migrations, several workers on one queue, database down."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import func, select

from mailbot.bots.default import app
from mailbot.errors import ConfigError
from mailbot.serve import running
from mailbot.store.db import database, upgrade
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

pytestmark = pytest.mark.postgres


async def test_a_node_refuses_to_start_on_an_unmigrated_database(
    tmp_path: Path, postgres_url: str
) -> None:
    with pytest.raises(ConfigError, match="mailbot db upgrade"):
        async with running(settings_for(tmp_path, database_url=postgres_url), app):
            pass


async def test_two_workers_share_the_queue_and_each_message_is_handled_once(
    tmp_path: Path, postgres_url: str, sink: SmtpSink
) -> None:
    async with database(postgres_url) as (engine, _):
        await upgrade(engine)
    settings = settings_for(tmp_path, sink, database_url=postgres_url)
    async with (
        running(settings, app, work=False, http=False) as smtp_node,
        running(settings, app, smtp=False, http=False) as worker_a,
        running(settings, app, smtp=False, http=False) as worker_b,
    ):
        thread = await make_thread(smtp_node, people=("alice", "bob"))
        address = thread.addresses["alice"]
        ids = []
        for i in range(20):
            raw = build_mail("alice@example.com", address, f"Comment number {i}.")
            ids.append(
                (
                    await smtp_send(smtp_node.smtp_port, "alice@example.com", [address], raw)
                ).inbound_id
            )
        worker_a.wake_worker.set()
        worker_b.wake_worker.set()
        rows = [await wait_for_status(smtp_node.sessions, i) for i in ids]
        assert {row.status for row in rows} == {InboundStatus.delivered}
        assert {row.attempts for row in rows} == {1}
        async with smtp_node.sessions() as session:
            comments = list(await session.scalars(select(Comment.body).order_by(Comment.id)))
            assert sorted(comments) == sorted(f"Comment number {i}." for i in range(20))
            assert await session.scalar(select(func.count(InboundMessage.id))) == 20
        await sink.wait_for(20)
        assert len(sink.received) == 20


async def test_database_down_answers_451_and_nothing_is_acknowledged(
    tmp_path: Path, postgres_url: str, sink: SmtpSink
) -> None:
    async with database(postgres_url) as (engine, _):
        await upgrade(engine)
    settings = settings_for(tmp_path, sink, database_url=postgres_url)
    async with running(settings, app, http=False) as node:
        thread = await make_thread(node)
        address = thread.addresses["alice"]
        admin = await asyncpg.connect(
            postgres_url.replace("+asyncpg", "").rsplit("/", 1)[0] + "/test"
        )
        try:
            name = postgres_url.rsplit("/", 1)[1]
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            result = await smtp_send(
                node.smtp_port,
                "alice@example.com",
                [address],
                build_mail("alice@example.com", address, "x"),
            )
            assert result.rcpt_codes[0][0] == 451
            assert result.data_code is None
            await admin.execute(f'CREATE DATABASE "{name}"')  # for the fixture's clean-up
        finally:
            await admin.close()


async def test_mailbot_db_upgrade_prepares_a_database_a_node_then_runs_on(
    tmp_path: Path, postgres_url: str, sink: SmtpSink
) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env["MAILBOT_DATABASE_URL"] = postgres_url
    done = subprocess.run(
        [sys.executable, "-m", "mailbot", "db", "upgrade"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    settings = settings_for(tmp_path, sink, database_url=postgres_url)
    async with running(settings, app, http=False) as node:
        thread = await make_thread(node, people=("alice", "bob"))
        row = await reply(node, "alice@example.com", thread.addresses["alice"], "On PG.")
    assert (row.status, row.reply_text) == (InboundStatus.delivered, "On PG.")
