"""What benchmarks/throughput.py reads off a running server: memory and CPU from /proc, the
inbound rows from its database, and (optionally) a py-spy profile."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from mailbot.status import FINAL_INBOUND
from mailbot.store.db import database, readers
from mailbot.store.models import Comment, InboundMessage, OutboundMessage

TICK = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (the analyser processes of a node)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents.setdefault(int(stat[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now, MiB; ``field="VmHWM"``: the most it ever was."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(stat[11]) + int(stat[12])) / TICK  # utime + stime


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy since boot, all cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK  # less idle and iowait


def own_cpu() -> float:
    """CPU seconds of this process (the benchmark's sampling and polling)."""
    times = os.times()
    return times.user + times.system


@dataclass
class Usage:
    wall: float  # seconds since reset()
    server: float  # CPU seconds of the server and its children
    others: float  # CPU seconds of everything else on the machine but this process


@dataclass
class Watched:
    """A server process and its children, sampled every 20 ms while a row runs."""

    pid: int
    peak: float = 0.0  # MiB, the whole tree, since reset()
    peak_main: float = 0.0
    _cpu: dict[int, float] = field(default_factory=dict)
    _since: tuple[float, float, float] = (0.0, 0.0, 0.0)  # wall, machine, own CPU

    def rss(self) -> float:
        return sum(rss_mb(p) for p in tree(self.pid))

    def main_rss(self) -> float:
        return rss_mb(self.pid)

    def reset(self) -> None:
        self.peak, self.peak_main = self.rss(), self.main_rss()
        self._cpu = {p: cpu_seconds(p) for p in tree(self.pid)}
        self._since = (time.time(), machine_busy(), own_cpu())

    def usage(self) -> Usage:
        """Since reset(): the server's CPU (a child that exited meanwhile is lost) and the
        rest of the machine's, which includes the load's clients."""
        server = sum(cpu_seconds(p) - self._cpu.get(p, 0.0) for p in tree(self.pid))
        wall, machine, own = self._since
        others = machine_busy() - machine - server - (own_cpu() - own)
        return Usage(time.time() - wall, server, max(0.0, others))

    def sample(self) -> None:
        self.peak = max(self.peak, self.rss())
        self.peak_main = max(self.peak_main, self.main_rss())


@contextlib.asynccontextmanager
async def watching(pid: int) -> AsyncIterator[Watched]:
    watched = Watched(pid)
    watched.reset()

    async def sampler() -> None:
        while True:
            watched.sample()
            await asyncio.sleep(0.02)

    task = asyncio.create_task(sampler())
    try:
        yield watched
    finally:
        task.cancel()


@dataclass
class Finished:
    count: int
    latencies: list[float]  # accept → final, seconds
    last_finished: float  # unix time
    statuses: dict[str, int]
    reasons: dict[str, int]
    comments: int
    notifications: int
    timed_out: bool


class Inbound:
    """The node's inbound rows, read straight from its database (no load on its HTTP side)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.after = 0  # rows up to this id were already reported
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Inbound:
        _, writer = await self._stack.enter_async_context(database(self.url))
        # Read-only connections on SQLite: a writer session would take mailbot's writer lock
        # (BEGIN IMMEDIATE) at every look, ten times a second, from the node it measures.
        self.sessions = await self._stack.enter_async_context(readers(self.url, writer))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def wait_final(self, count: int, timeout: float = 120) -> Finished:
        """Wait until the next ``count`` rows are final; what became of them."""
        newer = InboundMessage.id > self.after
        timed_out = False
        try:
            async with asyncio.timeout(timeout):
                while True:
                    async with self.sessions() as session:
                        final = await session.scalar(
                            select(func.count())
                            .select_from(InboundMessage)
                            .where(newer, InboundMessage.status.in_(FINAL_INBOUND))
                        )
                    if (final or 0) >= count:
                        break
                    await asyncio.sleep(0.1)
        except TimeoutError:
            timed_out = True
        async with self.sessions() as session:
            rows = (
                await session.execute(
                    select(
                        InboundMessage.id,
                        InboundMessage.status,
                        InboundMessage.reason,
                        InboundMessage.received_at,
                        InboundMessage.updated_at,
                    ).where(newer, InboundMessage.status.in_(FINAL_INBOUND))
                )
            ).all()
            comments = await session.scalar(
                select(func.count()).select_from(Comment).where(Comment.inbound_id > self.after)
            )
            notifications = await session.scalar(
                select(func.count())
                .select_from(OutboundMessage)
                .where(OutboundMessage.inbound_id > self.after)
            )
        self.after = max([self.after, *(r.id for r in rows)])
        return Finished(
            count=len(rows),
            latencies=[(r.updated_at - r.received_at).total_seconds() for r in rows] or [0.0],
            last_finished=max((r.updated_at.timestamp() for r in rows), default=0.0),
            statuses=dict(Counter(r.status.value for r in rows)),
            reasons=dict(Counter(r.reason for r in rows if r.reason)),
            comments=comments or 0,
            notifications=notifications or 0,
            timed_out=timed_out,
        )


# Frames where a thread waits rather than works (py-spy does not always see them as idle).
WAITING = (
    "Selector.select (selectors.py",
    "_connection_worker_thread (aiosqlite/core.py:59)",  # the queue get between statements
    "_worker (concurrent/futures/thread.py:81)",
    "wait (threading.py",
)


async def profile(
    py_spy: str, pid: int, out: Path, load: Callable[[], Awaitable[Any]], top: int = 20
) -> None:
    """Record ``pid`` and its analysers under py-spy while ``load`` runs; print where the
    main process's threads work (waits left out): its event loop, the aiosqlite threads
    that run the SQL, the rest; the mailbot and aiosmtpd functions the loop spends most in,
    including what they call; the frames busiest on their own."""
    raw = out.with_suffix(".txt")
    recorder = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(raw),
         "--rate", "200", "--subprocesses", "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    await asyncio.sleep(1)
    began = time.perf_counter()
    await load()
    seconds = time.perf_counter() - began
    recorder.send_signal(signal.SIGINT)
    _, err = recorder.communicate(timeout=60)
    if not raw.exists():
        print(f"py-spy wrote nothing: {err.decode()[-500:]}")
        return
    where: Counter[str] = Counter()
    own: Counter[str] = Counter()
    including: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames, count = stack.split(";"), int(samples)
        if any(waiting in frames[-1] for waiting in WAITING):
            continue
        if not frames[0].startswith(f"process {pid}:"):
            where["analyser processes"] += count
            continue
        if any(f.startswith("serve (mailbot/cli/serving.py") for f in frames):
            where["event loop"] += count
            for frame in set(frames):
                if "mailbot/" in frame or "aiosmtpd/" in frame:
                    including[frame] += count
        elif any("aiosqlite/core.py" in f for f in frames):
            where["aiosqlite threads"] += count
        else:
            where["other threads"] += count
        own[frames[-1]] += count
    loop = max(where["event loop"], 1)
    print(f"\npy-spy over {seconds:.1f} s at 200 samples/s (stacks: {raw}); busy samples:")
    for name, count in where.most_common():
        print(f"  {name:20} {count:6}  ({count / seconds / 2:.0f}% of one core)")
    print(f"the event loop, by function including callees (% of its {loop} samples):")
    for frame, count in including.most_common(top + 2)[2:]:  # less the cli entry points
        print(f"  {100 * count / loop:5.1f}%  {frame}")
    print("the main process, by own time (% of all its busy samples):")
    busy = max(sum(v for k, v in where.items() if k != "analyser processes"), 1)
    for frame, count in own.most_common(top):
        print(f"  {100 * count / busy:5.1f}%  {frame}")


async def wait_port(port: int, proc: subprocess.Popen[Any] | None = None) -> None:
    for _ in range(600):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}) before listening")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")
