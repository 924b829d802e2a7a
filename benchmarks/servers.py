"""The servers benchmarks/throughput.py measures, each its own process, stopped afterwards:
Postfix's ``smtp-sink``, a bare aiosmtpd server that accepts and discards, and a mailbot node
on a fresh SQLite or PostgreSQL database, with conversations whose reply addresses it accepts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import server_stats as stats
from big_mail_memory import BARE
from server_stats import wait_port

ROOT = Path(__file__).resolve().parents[1]
MAILBOT = str(ROOT / ".venv/bin/mailbot")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"  # Debian package postfix
SOURCE: list[str] = []  # --source: mailbot's code from another tree, ahead on PYTHONPATH
CONVERSATIONS = [1]  # --conversations: how many the load is spread over


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def process(args: list[str], **popen: Any) -> AsyncIterator[subprocess.Popen[Any]]:
    proc = subprocess.Popen(args, **popen)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.asynccontextmanager
async def bare() -> AsyncIterator[tuple[stats.Watched, int]]:
    async with process([sys.executable, "-c", BARE], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        async with stats.watching(proc.pid) as watched:
            yield watched, port


@contextlib.asynccontextmanager
async def smtp_sink() -> AsyncIterator[tuple[stats.Watched, int]]:
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root
    async with process([SINK, *user, "-4", f"127.0.0.1:{port}", "256"]) as proc:
        await wait_port(port, proc)
        async with stats.watching(proc.pid) as watched:
            yield watched, port


@dataclass
class Node:
    watched: stats.Watched
    smtp_port: int
    url: str
    addresses: list[str]  # alice's live reply address in each conversation
    log: Path

    @property
    def address(self) -> str:
        return self.addresses[0]


def node_env(tmp: str, url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "MAILBOT_DATABASE_URL": url,
        "MAILBOT_HOME": tmp,
        "MAILBOT_SMTP_PORT": str(free_port()),
        "MAILBOT_HTTP_PORT": str(free_port()),
        "MAILBOT_DNS": "offline",
        "MAILBOT_MESSAGES_PER_MINUTE_PER_IP": "0",
        "MAILBOT_MESSAGES_PER_MINUTE_PER_SENDER": "0",
        "MAILBOT_CONNECTIONS_PER_MINUTE_PER_IP": "0",
        "MAILBOT_MAX_SENDS_PER_ADDRESS_PER_HOUR": "0",
        "MAILBOT_LOOP_MAX_REPLIES": "0",  # every message goes to one conversation
        **({"PYTHONPATH": SOURCE[0]} if SOURCE else {}),
        **extra,
    }


async def conversation(env: dict[str, str], key: str) -> str:
    """A conversation where bob is told and alice writes: alice's reply address."""
    await asyncio.to_thread(
        cli, env, "reply-address", key, "bob@example.com", "--name", "Bob",
        "--subject", "Printer on fire",
    )  # fmt: skip
    return await asyncio.to_thread(
        cli, env, "reply-address", key, "alice@example.com", "--name", "Alice"
    )


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([MAILBOT, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mailbot {args[0]} failed: {done.stderr[-2000:]}")
    return done.stdout.strip()


async def settled(pids: list[int], quiet: float = 0.05, timeout: float = 60.0) -> None:
    """Wait until the processes and their children use under ``quiet`` of a core."""

    def used() -> float:
        return sum(stats.cpu_seconds(p) for root in pids for p in stats.tree(root))

    deadline = time.monotonic() + timeout
    before = used()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = used()
        if now - before < quiet * 0.5:
            return
        before = now


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    import asyncpg

    name = f"bench_{os.getpid()}_{time.monotonic_ns() % 10**6}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def database_url(kind: str, tmp: str) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp}/mailbot.db"
    else:
        async with postgres_database() as url:
            yield url


@contextlib.asynccontextmanager
async def mailbot(
    kind: str, *serve_args: str, workers: int = 0, **extra: str
) -> AsyncIterator[Node]:
    """A fresh node on a fresh database, with ``CONVERSATIONS`` conversations: alice writes,
    bob is told.
    ``workers``: that many more processes, ``mailbot serve --role worker``, on the same
    database (PostgreSQL), started before the node; their CPU is not in the node's figures."""
    with tempfile.TemporaryDirectory() as tmp:
        async with database_url(kind, tmp) as url:
            env = node_env(tmp, url, **extra)
            if kind != "sqlite":
                cli(env, "db", "upgrade")
            addresses = await asyncio.gather(
                *(conversation(env, f"bench-{n}") for n in range(CONVERSATIONS[0]))
            )
            log = Path(tmp) / "serve.log"
            with log.open("w") as out:
                others = contextlib.AsyncExitStack()
                started = []
                for _ in range(workers):
                    started.append(
                        await others.enter_async_context(
                            process([MAILBOT, "serve", "--role", "worker"], env=env, stderr=out)
                        )
                    )
                async with (
                    others,
                    process([MAILBOT, "serve", *serve_args], env=env, stderr=out) as proc,
                ):
                    port = int(env["MAILBOT_SMTP_PORT"])
                    try:
                        await wait_port(port, proc)
                        if "--role" not in serve_args:  # every part, the HTTP side too
                            await wait_port(int(env["MAILBOT_HTTP_PORT"]), proc)
                    except RuntimeError:
                        print(log.read_text()[-3000:], file=sys.stderr)
                        raise
                    # Started means quiet: the worker child and its analysers (talon's
                    # model is trained as each starts) have done starting, or they would
                    # take CPU from the first row measured.
                    await settled([proc.pid, *(p.pid for p in started)])
                    async with stats.watching(proc.pid) as watched:
                        yield Node(watched, port, url, list(addresses), log)
