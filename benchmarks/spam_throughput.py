"""Messages per second through the pipeline with spamd, next to spamd's own rate.

The claim this measures: scanning through mailbot (SMTP, spool, worker, aiospamc, policy,
bot) costs little on top of what spamd itself needs for the same mail. In one run, against
one local spamd (offline configuration, mailbot/testing/spamd.py), the same messages are:

1. sent to spamd with Debian's ``spamc -R`` directly, ``--concurrency`` at a time;
2. sent over SMTP to a running node with ``MAILBOT_SPAMD`` set, through the whole pipeline
   (until every message is delivered), by ``--concurrency`` SMTP clients;
3. the same through a node without spam scanning, for the pipeline's own cost.

    .venv/bin/python benchmarks/spam_throughput.py [--messages 100] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailbot.bots.default import app  # noqa: E402
from mailbot.serve import Node, running  # noqa: E402
from mailbot.store.models import FINAL_INBOUND, InboundStatus  # noqa: E402
from mailbot.testing import (  # noqa: E402
    SmtpSink,
    build_mail,
    make_thread,  # noqa: E402
    settings_for,
    smtp_send,
    wait_for_status,
)
from mailbot.testing.spamd import Spamd  # noqa: E402

PARAGRAPHS = [
    "Thanks for the quick fix. I tried the new build this morning and the export works.",
    "One thing: the date column is still in UTC, which confuses people in Berlin.",
    "Could we show the local time next to it? Happy to test again tomorrow.",
    "The invoice from last week is attached to the ticket, see the link in the thread.",
]


def messages(count: int, address: str) -> list[bytes]:
    return [
        build_mail(
            "Alice <alice@example.com>",
            address,
            f"Reply number {i}.\n\n" + "\n\n".join(PARAGRAPHS[: 1 + i % len(PARAGRAPHS)]),
            subject=f"Re: Issue {i}",
        )
        for i in range(count)
    ]


async def spamc_rate(spamd: Spamd, raws: list[bytes], concurrency: int) -> float:
    spamc = shutil.which("spamc")
    if spamc is None:
        raise SystemExit("spamc is not installed (Debian: apt-get install spamc)")
    slots = asyncio.Semaphore(concurrency)

    async def one(raw: bytes) -> None:
        async with slots:
            proc = await asyncio.create_subprocess_exec(
                spamc,
                "-d",
                "127.0.0.1",
                "-p",
                str(spamd.port),
                "-R",
                "-x",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
            )
            await proc.communicate(raw)
            # -R exits 0 for ham, 1 for spam; anything else means spamd did not answer.
            if proc.returncode not in (0, 1):
                raise RuntimeError(f"spamc failed with {proc.returncode}")

    start = time.perf_counter()
    await asyncio.gather(*(one(raw) for raw in raws))
    return len(raws) / (time.perf_counter() - start)


async def pipeline_rate(node: Node, address: str, raws: list[bytes], concurrency: int) -> float:
    queue = list(raws)
    ids: list[int] = []

    async def client() -> None:
        while queue:
            raw = queue.pop()
            result = await smtp_send(node.smtp_port, "alice@example.com", [address], raw)
            ids.append(result.inbound_id)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    rows = [await wait_for_status(node.sessions, i, FINAL_INBOUND, 600) for i in ids]
    elapsed = time.perf_counter() - start
    failed = [r for r in rows if r.status != InboundStatus.delivered]
    if failed:
        raise RuntimeError(
            f"{len(failed)} not delivered, e.g. {failed[0].status}: {failed[0].reason}"
        )
    return len(raws) / elapsed


async def run_pipeline(
    spamd: Spamd | None, count: int, concurrency: int
) -> tuple[float, list[bytes]]:
    with tempfile.TemporaryDirectory() as tmp:
        async with SmtpSink() as sink:
            settings = settings_for(
                Path(tmp),
                sink,
                spamd=spamd.address if spamd else None,
                spamd_concurrency=concurrency,
                worker_concurrency=concurrency,
                cpu_workers=2,
            )
            async with running(settings, app, http=False) as node:
                thread = await make_thread(node, people=("alice", "bob"))
                address = thread.addresses["alice"]
                raws = messages(count, address)
                await pipeline_rate(node, address, messages(4, address), concurrency)  # warm-up
                return await pipeline_rate(node, address, raws, concurrency), raws


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with Spamd(children=args.concurrency) as spamd:
        with_spamd, raws = await run_pipeline(spamd, args.messages, args.concurrency)
        direct = await spamc_rate(spamd, raws, args.concurrency)
    without, _ = await run_pipeline(None, args.messages, args.concurrency)
    print(f"{args.messages} messages, concurrency {args.concurrency}")
    print(f"  spamc -> spamd directly:         {direct:7.1f} msg/s")
    print(f"  SMTP -> pipeline, with spamd:    {with_spamd:7.1f} msg/s")
    print(f"  SMTP -> pipeline, without spamd: {without:7.1f} msg/s")
    print(f"  ratio pipeline with spamd / spamc alone: {with_spamd / direct:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
