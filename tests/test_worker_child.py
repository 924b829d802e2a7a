"""`mailbot serve` runs its worker in a child process (pipeline/child.py), on SQLite and on
PostgreSQL: woken through a pipe when a message is stored, restarted when it dies alone,
and gone when its parent is killed."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import pytest

from mailbot.bots.default import app as default_app
from mailbot.pipeline.child import NICER, WorkerChild
from mailbot.serve import running
from mailbot.store.db import database, upgrade
from mailbot.store.models import InboundStatus
from mailbot.testing import build_mail, make_thread, settings_for, smtp_send, wait_for_status
from mailbot.web import live
from tests.test_several_nodes import (
    Store,
    live_socket,
    node_env,
    start_node,
    statuses_until_delivered,
    stop_node,
)


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.add(int(entry.name))
    return found


async def _worker_of(pid: int) -> int:
    """The node's worker process: its child started by multiprocessing's spawn."""
    async with asyncio.timeout(30):
        while True:
            for child in _children(pid):
                try:
                    command = Path(f"/proc/{child}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"spawn_main" in command:
                    return child
            await asyncio.sleep(0.1)


async def _ready(log: Path, times: int) -> None:
    """Until the log says a worker process was ready ``times`` times: idle, so only a
    wake-up brings it the next message."""
    async with asyncio.timeout(60):
        while len(re.findall(r"worker process \d+ ready", log.read_text(errors="replace"))) < times:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # its first claim, of nothing, is done


@pytest.fixture(params=["sqlite", "postgresql"])
def either_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'mailbot.db'}"
    return str(request.getfixturevalue("postgres_url"))  # a fresh database of its own


async def test_the_worker_child_is_woken_restarted_yields_to_smtp_and_dies_with_its_node(
    tmp_path: Path, either_url: str
) -> None:
    """On either database: a node that receives and works runs its worker in a child."""
    url = either_url
    settings = settings_for(tmp_path, database_url=url)
    async with database(url) as (engine, sessions):
        await upgrade(engine)
        thread = await make_thread(Store(settings, sessions), people=("alice", "bob"))
        address = thread.addresses["alice"]
        # An hour between polls: only the pipe from the SMTP side can wake the worker.
        env = node_env(url, tmp_path, MAILBOT_POLL_SECONDS="3600", MAILBOT_WORKER_PROCESS="true")
        node = await start_node(env, tmp_path / "node.log")
        try:
            assert "worker and outbox (a child process)" in node.text
            await _ready(node.log, 1)
            first = await smtp_send(
                node.smtp_port,
                "alice@example.com",
                [address],
                build_mail("alice@example.com", address, "one"),
            )
            row = await wait_for_status(sessions, first.inbound_id, timeout=30)
            assert row.status == InboundStatus.delivered

            worker = await _worker_of(node.process.pid)
            # Below the SMTP server on a busy CPU: a sender's 250 comes first.
            node_nice = os.getpriority(os.PRIO_PROCESS, node.process.pid)
            assert os.getpriority(os.PRIO_PROCESS, worker) == node_nice + NICER
            os.kill(worker, signal.SIGKILL)  # dies alone: the node starts another
            async with asyncio.timeout(30):
                while (await _worker_of(node.process.pid)) == worker:
                    await asyncio.sleep(0.1)
            await _ready(node.log, 2)
            second = await smtp_send(
                node.smtp_port,
                "alice@example.com",
                [address],
                build_mail("alice@example.com", address, "two"),
            )
            row = await wait_for_status(sessions, second.inbound_id, timeout=30)
            assert row.status == InboundStatus.delivered

            worker = await _worker_of(node.process.pid)
            node.process.kill()  # the node dies: its worker must not live on
            await node.process.wait()
            async with asyncio.timeout(30):
                while os.path.exists(f"/proc/{worker}"):
                    await asyncio.sleep(0.1)
        finally:
            await stop_node(node)


async def test_what_the_worker_child_finished_shows_on_the_live_inbox_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'mailbot.db'}"
    settings = settings_for(tmp_path, database_url=url)
    # An hour between the live inbox's looks: only the child's word brings "delivered".
    monkeypatch.setattr(live, "POLL_SECONDS", 3600.0)
    async with running(settings, default_app, work=False) as node:
        assert node.feed is not None
        thread = await make_thread(node, people=("alice", "bob"))
        address = thread.addresses["alice"]
        async with WorkerChild(settings, "mailbot.bots.default:app", node.feed.stored) as child:
            async with live_socket(node.http_port) as ws:
                raw = build_mail("alice@example.com", address, "Seen live.")
                await smtp_send(node.smtp_port, "alice@example.com", [address], raw)
                child.wake()
                statuses = await statuses_until_delivered(ws)
    assert statuses[0] == "pending" and statuses[-1] == "delivered", statuses
