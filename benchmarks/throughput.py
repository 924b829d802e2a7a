"""Throughput and scale: one command, one table, every row from the same run.

    .venv/bin/python benchmarks/throughput.py [--messages 1000] [--skip-postgres] [--quick]
                                              [--skip-memory] [--profile DIR]
                                              [--conversations N] [--source DIR]

Every server runs as its own process and gets the same load from the same client
(benchmarks/smtp_load.py: raw asyncio streams, two processes of ten sessions each, so 20
concurrent sessions, each sending several 4 KiB messages per connection, as
``smtp-source -s 20`` does); the messages differ only in their number, Message-ID and
recipient. Rows:

- Postfix ``smtp-sink`` (Debian package ``postfix``; "not installed" without it) and a bare
  aiosmtpd server that accepts and discards (benchmarks/big_mail_memory.py's): references.
- mailbot durable acceptance: ``mailbot serve`` with its worker on (the honest figure: the
  node receives and works at once; the worker runs in a child process by default),
  messages/s and the client's MAIL → 250-after-DATA latency. Each node is measured once it
  is quiet: its worker and analysers started (talon's model trained), not while they start.
  With ``mailbot serve --role smtp`` (PostgreSQL only), also a row with the worker off; on
  SQLite, also rows with the worker in serve's own process (``MAILBOT_WORKER_PROCESS=false``);
  on PostgreSQL, also rows with three nodes on one database: one ``--role smtp``, two
  ``--role worker`` (the workers' CPU is not in the CPU columns).
- mailbot end to end, same run: from the first MAIL until the last message is ``delivered``
  with its comment stored and its notification queued (``held``: no relay); p50/p99 are
  accept → delivered (``received_at`` → ``updated_at`` of the inbound rows); then a paced run
  at 100 messages/s offered. On SQLite and on PostgreSQL (a fresh database ``bench_<pid>_<n>``
  on 127.0.0.1:5432, dropped afterwards).
- Memory: peak resident memory of the node (main process and analysers) while one 25 MiB
  message goes through end to end, and of the main process with 1,000 idle SMTP connections
  open (EHLO said, then nothing), with the time a normal client then needs for one message;
  the bare aiosmtpd server beside each.

Settings the benchmark needs, given to each node through the environment: ``MAILBOT_DNS=
offline`` (SPF/DKIM/DMARC never ask the network), the per-minute message and connection
limits off (loopback is exempt by default anyway), ``MAILBOT_MAX_SENDS_PER_ADDRESS_PER_HOUR=
0`` (the other participant gets one notification per message), ``MAILBOT_LOOP_MAX_REPLIES=0``
(every message is a reply in one conversation, which would otherwise be paused as a loop),
and for the memory rows ``MAILBOT_MAX_MESSAGE_SIZE`` 32 MiB, ``MAILBOT_MAX_CONNECTIONS``
4000 (1,000 idle stay below stress mode, half of it) and ``MAILBOT_MAX_CONNECTIONS_PER_IP=0``.
No spamd. Everything else is the default: two analyser processes, sixteen messages worked at
once.

The parts: benchmarks/smtp_load.py (the client), servers.py (starting each server),
server_stats.py (memory and CPU from /proc, the inbound rows, py-spy), report.py (the table
and the targets).

``--conversations N`` spreads each load row's messages over N conversations, alice writing
in each (by default one: smtp-source's one sender to one address, whose mail one
conversation takes in order, one message at a time, however many workers there are).

``--source DIR`` runs mailbot from another tree (``git archive COMMIT | tar -x -C DIR``), to
compare a commit with the working tree on the same machine in the same hour.

``--profile DIR`` also records mailbot (SQLite) under py-spy during one more saturated run and
prints where its main process spends time (py-spy on PATH, or ``--py-spy PATH``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import server_stats as stats  # noqa: E402
import servers  # noqa: E402
import smtp_load  # noqa: E402
from big_mail_memory import big_reply  # noqa: E402
from report import IDLE, LEGEND, PACED_RATE, Row, fmt, pct, table, targets  # noqa: E402
from servers import Node, mailbot  # noqa: E402
from smtp_load import Load, run_load  # noqa: E402

BIG_MB = 25


async def load_row(
    name: str, server: stats.Watched, port: int, rcpt: str | list[str], count: int
) -> tuple[Row, Load]:
    load = await run_load(port, rcpt, "load", count, server=server)
    row = Row(
        name,
        rate=load.rate,
        p50=pct(load.latencies, 0.5) * 1000,
        p99=pct(load.latencies, 0.99) * 1000,
        rss=server.peak,
        note=f"answers, median ms: {load.step_medians()}"
        + (f"; errors {load.errors}" if load.errors else ""),
    )
    assert load.usage is not None
    row.cpu(load.usage, load.client_cpu, len(load.latencies))
    return row, load


async def bare_rows(count: int) -> list[Row]:
    async with servers.bare() as (watched, port):
        return [(await load_row("bare aiosmtpd", watched, port, "x@bare.test", count))[0]]


async def sink_rows(count: int) -> list[Row]:
    if not Path(servers.SINK).exists():
        return [Row("Postfix smtp-sink", note="not installed (Debian package postfix)")]
    async with servers.smtp_sink() as (watched, port):
        return [(await load_row("Postfix smtp-sink", watched, port, "x@sink.test", count))[0]]


async def mailbot_rows(
    kind: str,
    count: int,
    paced: int,
    bare_rate: float,
    profile: Path | None,
    py_spy: str | None,
    split: bool = False,
) -> list[Row]:
    label = "SQLite" if kind == "sqlite" else "PostgreSQL"
    extra, args, workers = {}, [], 0
    if split and kind == "sqlite":  # the worker in serve's own process, not a child
        label += ", one process"
        extra["MAILBOT_WORKER_PROCESS"] = "false"
    elif split:  # several nodes: one receives, two work (their CPU is not in the columns)
        label += ", --role smtp node + 2 --role worker nodes"
        args, workers = ["--role", "smtp"], 2
    rows: list[Row] = []
    node_cm = mailbot(kind, *args, workers=workers, **extra)
    async with node_cm as node, stats.Inbound(node.url) as inbound:
        warm = await run_load(node.smtp_port, node.addresses, "warm", 40)
        await inbound.wait_final(40, timeout=120)
        if warm.errors:
            raise RuntimeError(f"mailbot refused the warm-up messages: {warm.errors}")
        accept, load = await load_row(
            f"mailbot durable acceptance, {label}",
            node.watched,
            node.smtp_port,
            node.addresses,
            count,
        )
        rows.append(accept)
        done = await inbound.wait_final(count, timeout=max(300, count))
        rows.append(e2e_row(f"mailbot end to end, {label}", done, load, node))
        paced_load = await run_load(
            node.smtp_port, node.addresses, "paced", paced, PACED_RATE, node.watched
        )
        done = await inbound.wait_final(paced, timeout=max(300, paced))
        row = e2e_row(
            f"mailbot end to end at {PACED_RATE}/s offered, {label}", done, paced_load, node
        )
        row.offered = len(paced_load.latencies) / (paced_load.last - paced_load.first)
        row.note = f"offered {row.offered:.0f}/s in fact; " + row.note
        rows.append(row)
        for row in rows:
            row.ratio = row.rate / bare_rate if row.rate else None
        if profile is not None and py_spy:
            await stats.profile(
                py_spy,
                node.watched.pid,
                profile / f"mailbot-{kind}",
                lambda: run_load(node.smtp_port, node.addresses, "profile", count),
            )
    return rows


async def smtp_role_rows(count: int, bare_rate: float) -> list[Row]:
    """Acceptance with no worker in the process (``--role smtp``; it needs PostgreSQL)."""
    if "--role" not in servers.cli(servers.node_env("/tmp", "sqlite://"), "serve", "--help"):
        return []
    async with mailbot("postgres", "--role", "smtp") as node:
        await run_load(node.smtp_port, node.addresses, "warm", 40)
        row, _ = await load_row(
            "mailbot durable acceptance, worker off (--role smtp), PostgreSQL",
            node.watched,
            node.smtp_port,
            node.addresses,
            count,
        )
        row.ratio = row.rate / bare_rate if row.rate else None
        return [row]


def e2e_row(name: str, done: stats.Finished, load: Load, node: Node) -> Row:
    """Messages/s from the first MAIL to the last ``delivered``; p50/p99 accept → delivered."""
    usage = node.watched.usage()  # from the load's start until the worker was seen done
    notes = []
    if done.statuses.get("delivered", 0) != done.count:
        notes.append(f"statuses {done.statuses}, reasons {done.reasons}")
    if done.comments != done.count or done.notifications != done.count:
        notes.append(f"comments {done.comments}, notifications {done.notifications}")
    if done.timed_out:
        notes.append("TIMED OUT waiting for the worker")
    row = Row(
        name,
        rate=done.count / (done.last_finished - load.first),
        p50=statistics.median(done.latencies) * 1000,
        p99=pct(done.latencies, 0.99) * 1000,
        rss=node.watched.peak,
        note="; ".join(notes),
    )
    row.cpu(usage, load.client_cpu, done.count)
    return row


async def big_rows() -> list[Row]:
    """One 25 MiB message: peak growth of resident memory, bare aiosmtpd and mailbot."""
    raw = big_reply("x@bare.test", BIG_MB).replace(b"\n", b"\r\n")
    size = len(raw) / 2**20
    async with servers.bare() as (watched, port):
        await asyncio.sleep(0.5)
        base = watched.rss()
        watched.reset()
        await smtp_load.send_one("127.0.0.1", port, "x@bare.test", raw)
        await asyncio.sleep(0.5)
        bare_row = Row(f"{size:.1f} MiB message, bare aiosmtpd", rss=watched.peak - base)
        bare_row.note = f"peak growth; {watched.peak:.0f} MiB from {base:.0f}"
    big = f"{(BIG_MB + 8) * 2**20}"
    async with mailbot("sqlite", MAILBOT_MAX_MESSAGE_SIZE=big) as node:
        async with stats.Inbound(node.url) as inbound:
            small = smtp_load.message(0, node.address, "warm")
            await smtp_load.send_one("127.0.0.1", node.smtp_port, node.address, small)
            await inbound.wait_final(1)
            await asyncio.sleep(1)
            base, base_main = node.watched.rss(), node.watched.main_rss()
            hwm = stats.rss_mb(node.watched.pid, "VmHWM")
            node.watched.reset()
            raw = big_reply(node.address, BIG_MB).replace(b"\n", b"\r\n")
            await smtp_load.send_one("127.0.0.1", node.smtp_port, node.address, raw)
            done = await inbound.wait_final(1, timeout=300)
            await asyncio.sleep(1)
            hwm_after = stats.rss_mb(node.watched.pid, "VmHWM")
        growth = node.watched.peak - base
        row = Row(f"{size:.1f} MiB message, mailbot end to end", rss=growth, size=size)
        row.ratio = growth / bare_row.rss if bare_row.rss else None
        main = f"+{node.watched.peak_main - base_main:.0f} MiB"
        if hwm_after > hwm:  # the kernel's own high-water mark, which no sampling misses
            main += f" (VmHWM: +{hwm_after - base_main:.0f})"
        row.note = (
            f"peak growth, main process and analysers; {node.watched.peak:.0f} MiB from "
            f"{base:.0f}; main process alone {main}; {done.statuses} {done.reasons or ''}"
        )
    return [bare_row, row]


async def idle_row(name: str, watched: stats.Watched, port: int, rcpt: str) -> Row:
    """RSS of the main process with 1,000 idle sessions; a normal client's time meanwhile."""

    async def normal(tag: str, n: int = 50) -> list[float]:
        return [
            await smtp_load.send_one("127.0.0.1", port, rcpt, smtp_load.message(i, rcpt, tag))
            for i in range(n)
        ]

    before = await normal("before")
    base = watched.main_rss()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "smtp_load.py"), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({"host": "127.0.0.1", "port": port, "idle": IDLE}).encode() + b"\n")
    await proc.stdout.readline()
    await asyncio.sleep(1)
    held = watched.main_rss()
    during = await normal("during")
    proc.stdin.write(b"stop\n")
    result = json.loads(await proc.stdout.readline())
    await proc.wait()
    return Row(
        name,
        p50=statistics.median(during) * 1000,
        p99=pct(during, 0.99) * 1000,
        rss=held,
        note=(
            f"{result['alive_at_end']} of {result['opened']} open at the end"
            f"{', failed ' + str(result['failed']) if result['failed'] else ''}; "
            f"+{held - base:.0f} MiB; a normal session without them: "
            f"median {statistics.median(before) * 1000:.1f} ms, max {max(before) * 1000:.1f} ms"
        ),
    )


async def idle_rows() -> list[Row]:
    async with servers.bare() as (watched, port):
        rows = [await idle_row(f"{IDLE:,} idle connections, bare aiosmtpd", watched, port, "x@b.t")]
    async with mailbot(
        "sqlite", MAILBOT_MAX_CONNECTIONS="4000", MAILBOT_MAX_CONNECTIONS_PER_IP="0"
    ) as node:
        rows.append(
            await idle_row(
                f"{IDLE:,} idle connections, mailbot", node.watched, node.smtp_port, node.address
            )
        )
    return rows


async def guarded(name: str, rows: Awaitable[list[Row]]) -> list[Row]:
    """The rows, or one row that says why they could not be measured; each shown once done."""
    try:
        found = await rows
    except Exception as exc:  # noqa: BLE001 - one broken row must not lose the others
        found = [Row(name, note=f"could not run: {type(exc).__name__}: {exc}")]
    for row in found:
        print(f"done: {row.name}: {fmt(row.rate, '.0f')} msg/s {row.note}", file=sys.stderr)
    return found


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, help="per load row (default 1000)")
    parser.add_argument("--paced", type=int, help="messages of the paced run (default 500)")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="200 messages, 200 paced, unless given"
    )
    parser.add_argument(
        "--skip-memory", action="store_true", help="no 25 MiB message, no idle connections"
    )
    parser.add_argument("--profile", type=Path, help="write py-spy profiles here")
    parser.add_argument("--py-spy", default=shutil.which("py-spy"))
    parser.add_argument(
        "--source",
        type=Path,
        help="run mailbot from this tree instead (git archive COMMIT | tar -x -C DIR)",
    )
    parser.add_argument(
        "--conversations",
        type=int,
        default=1,
        help="spread the load rows' messages over this many conversations (alice writes in "
        "each); 1, the default, is smtp-source's one sender to one address",
    )
    args = parser.parse_args()
    servers.CONVERSATIONS[0] = max(1, args.conversations)
    if args.source is not None:
        servers.SOURCE.append(str(args.source.resolve()))
    # --quick shortens what was not given: --messages and --paced, when given, win.
    args.messages = args.messages or (200 if args.quick else 1000)
    args.paced = args.paced or (200 if args.quick else 500)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    load_before = os.getloadavg()[0]
    rows = await guarded("Postfix smtp-sink", sink_rows(args.messages))
    rows += await guarded("bare aiosmtpd", bare_rows(args.messages))
    bare_rate = rows[-1].rate or 1.0
    for row in rows:
        row.ratio = row.rate / bare_rate if row.rate else None
    kinds = [("sqlite", False), ("sqlite", True)]
    kinds += [] if args.skip_postgres else [("postgres", False), ("postgres", True)]
    for kind, split in kinds:
        profile = args.profile if kind == "sqlite" and not split else None
        rows += await guarded(
            f"mailbot, {kind}" + (", split" if split else ""),
            mailbot_rows(kind, args.messages, args.paced, bare_rate, profile, args.py_spy, split),
        )
    if not args.skip_postgres:
        rows += await guarded("mailbot --role smtp", smtp_role_rows(args.messages, bare_rate))
    if not args.skip_memory:
        rows += await guarded(f"{BIG_MB} MiB message", big_rows())
        rows += await guarded(f"{IDLE:,} idle connections", idle_rows())
    source = servers.SOURCE[0] if servers.SOURCE else servers.ROOT
    print(
        f"\n{args.messages} messages of {smtp_load.MESSAGE_SIZE} bytes per load row, "
        f"{smtp_load.SESSIONS} sessions in {smtp_load.CLIENT_PROCS} client processes; "
        f"{os.cpu_count()} cores; mailbot from {source}; "
        f"{time.perf_counter() - began:.0f} s in all; load average {load_before:.1f} at the "
        f"start, {os.getloadavg()[0]:.1f} at the end (the CPU columns say who was busy)\n"
    )
    print(table(rows))
    print(f"\n{LEGEND}\n\nTargets:")
    print("\n".join(targets(rows)))


if __name__ == "__main__":
    asyncio.run(main())
