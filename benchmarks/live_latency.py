"""How soon the live inbox shows a mail: from the SMTP server's 250 to the change arriving
over the WebSocket (``/api/live``), p50 and p95, first as stored and then as delivered.

- sqlite: one node runs every part; the worker tells the live inbox when it finished a
  message (and the inbox looks at the file every 0.25 s for anything else);
- sqlite, worker child: the same with the worker in a child process, as ``mailbot serve``
  runs it on SQLite: the child tells its parent through a pipe;
- postgres, NOTIFY: a web-only node (in this process) and a ``mailbot serve --role smtp
  --role worker`` process on one database; the web node hears each change by ``NOTIFY``;
- postgres, polling: the same, with the web node deaf to ``NOTIFY`` and looking every
  0.25 s, as the live inbox did before.

One message after another over one SMTP connection, a pause between them so each is timed
alone.

    .venv/bin/python benchmarks/live_latency.py [--messages 50] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosmtplib
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.servers import postgres_database  # noqa: E402
from mailbot.cli.serving import forward_wakes  # noqa: E402
from mailbot.pipeline.child import WorkerChild  # noqa: E402
from mailbot.serve import running  # noqa: E402
from mailbot.store.db import database, upgrade  # noqa: E402
from mailbot.testing import build_mail, make_thread, settings_for  # noqa: E402
from mailbot.web import live  # noqa: E402
from tests.test_several_nodes import APP, Store, node_env, start_node, stop_node  # noqa: E402

QUEUED = re.compile(r"queued as (\d+)")


async def _timed(
    http_port: int, smtp_port: int, address: str, messages: int
) -> tuple[list[float], list[float]]:
    """Seconds from each 250 to its first change on the socket, and to its 'delivered'."""
    first: list[float] = []
    final: list[float] = []
    url = f"ws://127.0.0.1:{http_port}/api/live"
    origin = websockets.Origin(f"http://127.0.0.1:{http_port}")
    async with (
        websockets.connect(url, origin=origin) as ws,
        aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port, start_tls=False) as client,
    ):
        assert json.loads(await ws.recv()) == {"type": "ready"}
        for i in range(messages):
            raw = build_mail("alice@example.com", address, f"Live {i}.")
            _, said = await client.sendmail("alice@example.com", [address], raw)
            accepted = time.perf_counter()
            found = QUEUED.search(said)
            assert found is not None, said
            wanted = int(found.group(1))
            seen: float | None = None
            async with asyncio.timeout(30):
                while True:
                    event = json.loads(await ws.recv())
                    for m in event.get("messages", []):
                        if m["id"] != wanted:
                            continue
                        now = time.perf_counter() - accepted
                        seen = now if seen is None else seen
                        if m["status"] not in ("pending", "processing"):
                            assert m["status"] == "delivered", m
                            first.append(seen)
                            final.append(now)
                            break
                    else:
                        continue
                    break
            await asyncio.sleep(0.3)  # alone: not in the same look as the one before
    return first, final


async def on_sqlite(messages: int, child: bool = False) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(Path(tmp), loop_max_replies=0)
        async with running(settings, APP, work=not child) as node:
            address = (await make_thread(node, people=("alice",))).addresses["alice"]
            if not child:
                return await _timed(node.http_port, node.smtp_port, address, messages)
            assert node.feed is not None
            spec = "tests.test_several_nodes:APP"
            async with WorkerChild(settings, spec, node.feed.stored) as worker:
                waking = asyncio.create_task(forward_wakes(node.wake_worker, worker))
                try:
                    return await _timed(node.http_port, node.smtp_port, address, messages)
                finally:
                    waking.cancel()


@contextlib.asynccontextmanager
async def _deaf() -> AsyncIterator[None]:
    """The web node listens on a channel nobody sends to, and looks every 0.25 s."""
    channel, fallback = live.notify.CHANGES_CHANNEL, live.FALLBACK_SECONDS
    live.notify.CHANGES_CHANNEL, live.FALLBACK_SECONDS = "mailbot_nobody", live.POLL_SECONDS
    try:
        yield
    finally:
        live.notify.CHANGES_CHANNEL, live.FALLBACK_SECONDS = channel, fallback


async def on_postgres(messages: int, hear: bool) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        async with postgres_database() as url:
            async with database(url) as (engine, sessions):
                await upgrade(engine)
                settings = settings_for(Path(tmp), database_url=url, loop_max_replies=0)
                thread = await make_thread(Store(settings, sessions), people=("alice",))
            env = node_env(url, Path(tmp))
            mail = await start_node(
                env,
                Path(tmp) / "mail.log",
                "--role",
                "smtp",
                "--role",
                "worker",
                "--app",
                "tests.test_several_nodes:APP",
            )
            try:
                async with (
                    contextlib.nullcontext() if hear else _deaf(),
                    running(settings, APP, smtp=False, work=False) as web,
                ):
                    await asyncio.sleep(1)  # the web node's listener connects
                    address = thread.addresses["alice"]
                    return await _timed(web.http_port, mail.smtp_port, address, messages)
            finally:
                await stop_node(mail)


def _row(name: str, times: tuple[list[float], list[float]]) -> str:
    def ms(values: list[float], q: float) -> str:
        ordered = sorted(values)
        return f"{ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000:7.1f}"

    first, final = times
    return (
        f"{name:<22} {statistics.median(first) * 1000:7.1f} {ms(first, 0.95)}"
        f"   {statistics.median(final) * 1000:7.1f} {ms(final, 0.95)}"
    )


async def main(messages: int, skip_postgres: bool) -> None:
    rows = [("sqlite", await on_sqlite(messages))]
    rows.append(("sqlite, worker child", await on_sqlite(messages, child=True)))
    if not skip_postgres:
        rows.append(("postgres, NOTIFY", await on_postgres(messages, hear=True)))
        rows.append(("postgres, polling", await on_postgres(messages, hear=False)))
    print(f"\n{messages} messages each; ms from the 250 to the change on the WebSocket")
    print(f"{'':<22} {'first event':>15}   {'delivered':>15}")
    print(f"{'':<22} {'p50':>7} {'p95':>7}   {'p50':>7} {'p95':>7}")
    for name, times in rows:
        print(_row(name, times))


def _args(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--skip-postgres", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = _args()
    asyncio.run(main(args.messages, args.skip_postgres))
