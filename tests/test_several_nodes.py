"""Several nodes on one PostgreSQL database (issue #10): ``mailbot serve --role``, workers
woken across processes by ``NOTIFY``, and three worker processes that share thousands of
messages and act on each exactly once, one of them killed with SIGKILL mid-message.

The nodes are real ``mailbot serve`` processes where the test is about processes; the
PostgreSQL server is real; mail arrives over SMTP on loopback. The big test sends 2,000
messages through one ``--role smtp`` process to three ``--role worker`` processes: about a
minute on 2 cores (some 50 CPU-seconds, most of it the pipeline).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg
import pytest
import websockets
from sqlalchemy import func, select

from mailbot import InboundMail, Mailbot, display_name, title
from mailbot.bots.comments import CommentsBot
from mailbot.cli.serving import Role, parts_for
from mailbot.config import Settings
from mailbot.errors import ConfigError
from mailbot.serve import running
from mailbot.store import notify
from mailbot.store.db import Sessions, database, upgrade
from mailbot.store.models import (
    FINAL_INBOUND,
    Comment,
    InboundMessage,
    InboundStatus,
    OutboundMessage,
)
from mailbot.testing import build_mail, make_thread, settings_for, smtp_send, wait_for_status
from mailbot.web import live

ROOT = Path(__file__).resolve().parents[1]
STARTED_LOG = "SEVERAL_NODES_STARTED"  # where each worker process notes what it starts
SLOW = "SEVERAL_NODES_SLOW"  # seconds a worker process's bot takes per message


class PidComments(CommentsBot):
    """The comments bot, saying in each comment which process posted it; it notes every
    message it starts in a file of its process's own, and may be told to be slow."""

    name = "comments"

    async def process(self, mail: InboundMail) -> None:
        assert mail.conversation is not None and mail.participant is not None
        started = os.environ.get(STARTED_LOG)
        if started:
            with open(f"{started}.{os.getpid()}", "a") as notes:
                notes.write(f"{mail.id}\n")
        await asyncio.sleep(float(os.environ.get(SLOW, "0")))
        await self.ctx.comment(mail, body=f"{mail.reply}\n[pid {os.getpid()}]")
        for other in mail.conversation.participants:
            if other.id != mail.participant.id:
                await self.ctx.send(
                    other,
                    subject=f"Re: {title(mail.conversation)}",
                    body=f"{display_name(mail.participant)} wrote:\n\n{mail.reply}\n",
                    in_reply_to=mail,
                    author=mail.participant,
                )


APP = Mailbot(bots=[PidComments])


# --- mailbot serve as a process of its own (tests/test_crash.py uses these too) ---


def node_env(database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``mailbot serve`` process in a test: our database, no
    MAILBOT_* from outside, offline DNS, free ports, analysis in a thread (2 cores)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(
        MAILBOT_DATABASE_URL=database_url,
        MAILBOT_HOME=str(tmp_path),
        MAILBOT_DNS="offline",
        MAILBOT_SMTP_PORT="0",
        MAILBOT_HTTP_PORT="0",
        MAILBOT_CPU_WORKERS="0",
        MAILBOT_POLL_SECONDS="0.2",
        MAILBOT_RETRY_BASE_SECONDS="0.1",
        MAILBOT_MAX_SENDS_PER_ADDRESS_PER_HOUR="0",  # one thread gets thousands of comments
        MAILBOT_LOOP_MAX_REPLIES="0",  # ... in minutes: not a loop here
    )
    env.update(extra)
    return env


@dataclass
class Served:
    process: asyncio.subprocess.Process
    log: Path
    env: dict[str, str]
    args: tuple[str, ...]

    @property
    def text(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def smtp_port(self) -> int:
        found = re.search(r"SMTP listening on [^:]+:(\d+)", self.text)
        assert found is not None, self.text
        return int(found.group(1))


async def start_node(env: dict[str, str], log: Path, *args: str) -> Served:
    """``mailbot serve ARGS`` in a process of its own, once it says it is serving; its log
    (appended to, across restarts) in ``log``."""
    with log.open("ab") as out:
        out.write(b"--- start\n")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mailbot",
            "serve",
            *args,
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    served = Served(process, log, env, args)
    async with asyncio.timeout(60):
        while "mailbot serving" not in served.text.rsplit("--- start\n", 1)[-1]:
            if process.returncode is not None:
                raise AssertionError(f"mailbot serve {args} ended:\n{served.text}")
            await asyncio.sleep(0.05)
    return served


async def stop_node(served: Served) -> None:
    """SIGINT (a clean stop) if it still runs; SIGKILL if that takes over 30 s."""
    if served.process.returncode is None:
        served.process.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(30):
                await served.process.wait()
        except TimeoutError:
            served.process.kill()
            await served.process.wait()


@contextlib.asynccontextmanager
async def stopped_at_the_end() -> AsyncIterator[list[Served]]:
    """A list to put started nodes in; each is stopped on the way out, whatever happened."""
    nodes: list[Served] = []
    try:
        yield nodes
    finally:
        await asyncio.gather(*(stop_node(n) for n in nodes))


async def wait_all_final(sessions: Sessions, count: int, timeout: float) -> None:
    """Until ``count`` inbound rows exist and every one has a final status."""
    async with asyncio.timeout(timeout):
        while True:
            async with sessions() as session:
                final = await session.scalar(
                    select(func.count())
                    .select_from(InboundMessage)
                    .where(InboundMessage.status.in_(FINAL_INBOUND))
                )
                total = await session.scalar(select(func.count()).select_from(InboundMessage))
            if total == count and final == count:
                return
            await asyncio.sleep(0.2)


@dataclass
class Store:
    """What make_thread needs, without a running node."""

    settings: Settings
    sessions: Sessions


# --- roles ---


def test_on_sqlite_a_node_runs_every_part_and_other_roles_are_refused(tmp_path: Path) -> None:
    sqlite = settings_for(tmp_path)
    assert parts_for(None, sqlite) == {"smtp": True, "work": True, "http": True}
    assert parts_for([Role.all], sqlite) == {"smtp": True, "work": True, "http": True}
    for roles in ([Role.smtp], [Role.worker], [Role.smtp, Role.worker]):
        with pytest.raises(ConfigError, match="needs PostgreSQL"):
            parts_for(roles, sqlite)


def test_on_postgresql_roles_choose_the_parts_and_may_be_combined(tmp_path: Path) -> None:
    pg = settings_for(tmp_path, database_url="postgresql+asyncpg://postgres@127.0.0.1/x")
    assert parts_for([Role.smtp], pg) == {"smtp": True, "work": False, "http": False}
    assert parts_for([Role.worker], pg) == {"smtp": False, "work": True, "http": False}
    assert parts_for([Role.web], pg) == {"smtp": False, "work": False, "http": True}
    assert parts_for([Role.smtp, Role.web], pg) == {"smtp": True, "work": False, "http": True}
    assert parts_for([Role.smtp, Role.all], pg) == {"smtp": True, "work": True, "http": True}


async def test_mailbot_serve_refuses_a_role_on_sqlite_with_the_fix_in_words(
    tmp_path: Path,
) -> None:
    env = node_env(f"sqlite+aiosqlite:///{tmp_path / 'mailbot.db'}", tmp_path)
    done = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mailbot",
        "serve",
        "--role",
        "worker",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await done.communicate()
    assert done.returncode == 2
    assert "--role worker needs PostgreSQL" in err.decode()
    assert not (tmp_path / "mailbot.db").exists()  # refused before anything started


# --- waking workers through PostgreSQL ---


async def _listening(admin: asyncpg.Connection, database_name: str) -> bool:
    """True once a listener of that database has run its LISTEN."""
    found = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2"
        " AND query ILIKE 'LISTEN%'",
        database_name,
        notify.APPLICATION_NAME,
    )
    return bool(found)


@pytest.mark.postgres
async def test_the_listener_wakes_on_notify_and_comes_back_after_its_backend_is_killed(
    postgres_url: str,
) -> None:
    wake, connected = asyncio.Event(), asyncio.Event()
    listener = asyncio.create_task(notify.listen(postgres_url, wake, connected=connected))
    plain = postgres_url.replace("+asyncpg", "")
    admin = await asyncpg.connect(plain)
    try:
        async with asyncio.timeout(20):
            await connected.wait()
            wake.clear()  # set once on connecting, for what was stored meanwhile
            await admin.execute(f"NOTIFY {notify.CHANNEL}")
            await wake.wait()

            wake.clear()
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1 AND datname = $2",
                notify.APPLICATION_NAME,
                plain.rsplit("/", 1)[1],
            )
            assert killed == 1
            while connected.is_set():  # noticed the loss
                await asyncio.sleep(0.01)
            await connected.wait()  # and connected again
            await wake.wait()  # the catch-up look after reconnecting
            wake.clear()
            await admin.execute(f"NOTIFY {notify.CHANNEL}")
            await wake.wait()
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await admin.close()


@pytest.mark.postgres
async def test_an_smtp_node_wakes_a_worker_node_at_once_with_no_poll_to_wait_for(
    tmp_path: Path, postgres_url: str
) -> None:
    async with database(postgres_url) as (engine, _):
        await upgrade(engine)
    # An hour between polls: only a notification can bring the message to this worker.
    settings = settings_for(tmp_path, database_url=postgres_url, poll_seconds=3600)
    plain = postgres_url.replace("+asyncpg", "")
    admin = await asyncpg.connect(plain)
    try:
        async with (
            running(settings, APP, smtp=False, http=False),
            running(settings, APP, work=False, http=False) as smtp_node,
        ):
            async with asyncio.timeout(20):
                while not await _listening(admin, plain.rsplit("/", 1)[1]):
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # its catch-up look after connecting is over
            thread = await make_thread(smtp_node, people=("alice", "bob"))
            address = thread.addresses["alice"]
            raw = build_mail("alice@example.com", address, "Wake up, worker.")
            sent = await smtp_send(smtp_node.smtp_port, "alice@example.com", [address], raw)
            row = await wait_for_status(smtp_node.sessions, sent.inbound_id, timeout=30)
    finally:
        await admin.close()
    assert row.status == InboundStatus.delivered, row.reason


# --- three worker processes, thousands of messages ---

MESSAGES = 2000
SESSIONS = 10  # SMTP connections sending at once, each many messages


async def _send_all(port: int, address: str, numbers: list[int]) -> list[int]:
    """Send message ``i`` for each number over one connection; the numbers it got 250 for."""
    accepted = []
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        for i in numbers:
            raw = build_mail(
                "alice@example.com", address, f"Comment {i}.", message_id=f"<m{i}@nodes.test>"
            )
            await client.sendmail("alice@example.com", [address], raw)  # raises if refused
            accepted.append(i)
    return accepted


@pytest.mark.postgres
async def test_three_worker_processes_act_on_every_message_once_though_one_is_killed(
    tmp_path: Path, postgres_url: str
) -> None:
    async with database(postgres_url) as (engine, sessions):
        await upgrade(engine)
        settings = settings_for(tmp_path, database_url=postgres_url)
        thread = await make_thread(Store(settings, sessions), people=("alice", "bob", "carol"))
        address = thread.addresses["alice"]
        started = tmp_path / "started"
        env = node_env(postgres_url, tmp_path, MAILBOT_LEASE_SECONDS="2")
        app = ["--app", "tests.test_several_nodes:APP"]
        async with stopped_at_the_end() as nodes:
            smtp = await start_node(env, tmp_path / "smtp.log", "--role", "smtp", *app)
            nodes.append(smtp)
            workers = await asyncio.gather(
                *(
                    start_node(
                        {**env, STARTED_LOG: str(started), SLOW: "0.2" if n == 0 else "0"},
                        tmp_path / f"worker{n}.log",
                        "--role",
                        "worker",
                        *app,
                    )
                    for n in range(3)
                )
            )
            nodes.extend(workers)
            doomed = workers[0]
            sending = asyncio.gather(
                *(
                    _send_all(smtp.smtp_port, address, list(range(s, MESSAGES, SESSIONS)))
                    for s in range(SESSIONS)
                )
            )
            try:
                # Kill the slow worker once it has a few messages in hand, mid-message (its
                # bot sleeps inside the transaction that would record them).
                doomed_notes = Path(f"{started}.{doomed.process.pid}")
                async with asyncio.timeout(60):
                    while len(_lines(doomed_notes)) < 8:
                        await asyncio.sleep(0.01)
                doomed.process.kill()
                await doomed.process.wait()
                accepted = sorted(i for batch in await sending for i in batch)
                await wait_all_final(sessions, MESSAGES, timeout=240)
            finally:
                sending.cancel()  # over by now, unless the test failed on the way
                await asyncio.wait([sending])

        async with sessions() as session:
            inbound = (
                await session.execute(
                    select(InboundMessage.id, InboundMessage.status, InboundMessage.message_id)
                )
            ).all()
            comments = (await session.execute(select(Comment.inbound_id, Comment.body))).all()
            outbound = (
                await session.execute(select(OutboundMessage.inbound_id, OutboundMessage.recipient))
            ).all()

    assert accepted == list(range(MESSAGES))
    assert sorted(row.message_id for row in inbound) == sorted(
        f"<m{i}@nodes.test>" for i in range(MESSAGES)
    )
    assert Counter(row.status for row in inbound) == {InboundStatus.delivered: MESSAGES}
    # One comment per message, and each notification queued once per other participant.
    assert sorted(c.inbound_id for c in comments) == sorted(row.id for row in inbound)
    per_message = Counter((o.inbound_id, o.recipient) for o in outbound)
    assert set(per_message.values()) == {1}
    assert sorted(per_message) == sorted(
        (row.id, person) for row in inbound for person in ("bob@example.com", "carol@example.com")
    )
    # The work was shared, and what the killed worker had in hand was done by the others.
    posted_by = {c.inbound_id: int(c.body.rsplit("[pid ", 1)[1].rstrip("]")) for c in comments}
    survivors = {w.process.pid for w in workers[1:]}
    assert Counter(posted_by.values()).keys() <= {w.process.pid for w in workers}
    assert all(Counter(posted_by.values())[pid] > 0 for pid in survivors)
    taken_over = {i for i in _lines(doomed_notes) if posted_by[i] != doomed.process.pid}
    assert taken_over, "the killed worker had nothing in hand"
    assert {posted_by[i] for i in taken_over} <= survivors


def _lines(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().split()]


# --- the live inbox of a web node hears the other nodes (issue #11) ---


async def _hearing_changes(admin: asyncpg.Connection, database_name: str) -> bool:
    """True once a live inbox of that database listens to the status-change channel."""
    found = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2"
        " AND query ILIKE $3",
        database_name,
        notify.APPLICATION_NAME,
        f"LISTEN%{notify.CHANGES_CHANNEL}%",
    )
    return bool(found)


@contextlib.asynccontextmanager
async def live_socket(http_port: int) -> AsyncIterator[Any]:
    """The live inbox's WebSocket of a node, once it said it is ready."""
    url = f"ws://127.0.0.1:{http_port}/api/live"
    origin = websockets.Origin(f"http://127.0.0.1:{http_port}")
    async with websockets.connect(url, origin=origin) as ws:
        assert json.loads(await ws.recv()) == {"type": "ready"}
        yield ws


async def statuses_until_delivered(ws: Any, timeout: float = 60) -> list[str]:
    """The statuses a live inbox socket shows, in order, until one is ``delivered``."""
    statuses: list[str] = []
    async with asyncio.timeout(timeout):
        while "delivered" not in statuses:
            event = json.loads(await ws.recv())
            if event["type"] == "messages":
                statuses += [m["status"] for m in event["messages"]]
    return statuses


@pytest.mark.postgres
async def test_a_web_node_shows_live_what_another_node_received_heard_through_notify(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with database(postgres_url) as (engine, sessions):
        await upgrade(engine)
        settings = settings_for(tmp_path, database_url=postgres_url)
        thread = await make_thread(Store(settings, sessions), people=("alice",))
    address = thread.addresses["alice"]
    # An hour between looks at the database: only a notification brings the change here.
    monkeypatch.setattr(live, "FALLBACK_SECONDS", 3600.0)
    monkeypatch.setattr(live, "POLL_SECONDS", 3600.0)
    plain = postgres_url.replace("+asyncpg", "")
    admin = await asyncpg.connect(plain)
    heard: list[str] = []
    await admin.add_listener(notify.CHANGES_CHANNEL, lambda *args: heard.append(args[3]))
    env = node_env(postgres_url, tmp_path)
    app = ["--app", "tests.test_several_nodes:APP"]
    try:
        async with (
            running(settings, APP, smtp=False, work=False) as web,
            stopped_at_the_end() as nodes,
        ):
            mail_node = await start_node(
                env, tmp_path / "mail.log", "--role", "smtp", "--role", "worker", *app
            )
            nodes.append(mail_node)
            async with asyncio.timeout(20):
                while not await _hearing_changes(admin, plain.rsplit("/", 1)[1]):
                    await asyncio.sleep(0.05)
            async with live_socket(web.http_port) as ws:
                raw = build_mail("alice@example.com", address, "Seen from the web node.")
                await smtp_send(mail_node.smtp_port, "alice@example.com", [address], raw)
                statuses = await statuses_until_delivered(ws)
    finally:
        await admin.close()
    # Each change the web node heard of, the last the other node's worker's answer.
    assert statuses[-1] == "delivered", statuses
    assert set(statuses) <= {"pending", "processing", "delivered"}, statuses
    # What NOTIFY carried: the id and the status, nothing else (never an address or token).
    assert all(re.fullmatch(r"[0-9]+ [a-z]+", payload) for payload in heard), heard
    assert heard[0].split()[1] == "pending" and heard[-1].endswith(" delivered"), heard
