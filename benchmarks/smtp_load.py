"""The load generator of benchmarks/throughput.py: a cheap SMTP client on raw asyncio streams.

No SMTP library in the loop: each session writes a command and reads its reply line, so the
client's cost per message is a few small reads and writes. It runs as its own process (the
benchmark starts one or more), and talks to its parent in JSON lines:

    parent → child   one spec (a JSON object), then "go <unix time>" to start the clock
    child → parent   "ready" once every session has said EHLO, then one result object

A spec is either a load (``sessions`` sessions send the messages numbered ``first``,
``first + step``, ... below ``count``, several per connection; with ``rate`` the messages are
offered at that many per second in total, else as fast as the server answers) or ``idle``
connections that say EHLO and then wait until the parent writes "stop".

:func:`run_load` is the parent's side: it starts two of these processes with ten sessions
each, starts their clocks together and merges what they measured.

    .venv/bin/python benchmarks/smtp_load.py < spec.json     (normally started by run_load)
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the parent's side only; a client process needs none of it
    import server_stats as stats

SESSIONS, CLIENT_PROCS = 20, 2  # 20 sessions at once, in two client processes
MESSAGE_SIZE = 4096
SENDER = "alice@example.com"
BODY_LINE = b"The printer in room 3 is still on fire; I put it out twice this week.\r\n"


def message(number: int, to: str, tag: str, size: int = MESSAGE_SIZE) -> bytes:
    """Message ``number`` of a run: the same text and size for every server, its own
    Message-ID (mailbot acts on a Message-ID once), padded to exactly ``size`` bytes."""
    head = (
        f"From: Alice <{SENDER}>\r\n"
        f"To: {to}\r\n"
        f"Subject: Re: Printer on fire ({number})\r\n"
        "Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
        f"Message-ID: <bench-{tag}-{number}@client.example>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"Reply number {number}.\r\n\r\n"
    ).encode()
    tail = (
        b"\r\nOn Tue, 24 Nov 2026, mailbot <notifications@localhost> wrote:\r\n"
        b"> The printer in room 3 is on fire.\r\n"
    )
    lines, rest = divmod(size - len(head) - len(tail), len(BODY_LINE))
    if rest == 1:  # no line of one byte: one line fewer, and a longer last line
        lines, rest = lines - 1, rest + len(BODY_LINE)
    body = BODY_LINE * lines + (b"x" * (rest - 2) + b"\r\n" if rest else b"")
    return head + body + tail


def data_payload(raw: bytes) -> bytes:
    """``raw`` as sent after DATA: dot-stuffed and ended by the lone dot."""
    lines = raw.split(b"\r\n")
    stuffed = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


class SmtpError(Exception):
    def __init__(self, step: str, code: int, text: str) -> None:
        super().__init__(f"{step}: {code} {text}")
        self.step, self.code, self.text = step, code, text


@dataclass
class Session:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def reply(self) -> tuple[int, str]:
        text = []
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("the server closed the connection")
            text.append(line[4:].decode("utf-8", "replace").rstrip())
            if line[3:4] != b"-":
                return int(line[:3]), " ".join(text)

    async def command(self, line: bytes, step: str, expect: int) -> str:
        self.writer.write(line)
        code, text = await self.reply()
        if code != expect:
            raise SmtpError(step, code, text)
        return text

    async def send(self, mail_from: str, rcpt: str, payload: bytes) -> list[float]:
        """One transaction; the time each of its four answers took, in seconds."""
        times = [time.perf_counter()]
        for line, step, expect in (
            (f"MAIL FROM:<{mail_from}>\r\n".encode(), "MAIL", 250),
            (f"RCPT TO:<{rcpt}>\r\n".encode(), "RCPT", 250),
            (b"DATA\r\n", "DATA", 354),
            (payload, "end of data", 250),
        ):
            await self.command(line, step, expect)
            times.append(time.perf_counter())
        return [b - a for a, b in zip(times, times[1:], strict=False)]

    async def quit(self) -> None:
        try:
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self.reply(), 5)
        except (OSError, ConnectionError, TimeoutError, ValueError):
            pass
        self.writer.close()


async def connect(host: str, port: int) -> Session:
    reader, writer = await asyncio.open_connection(host, port)
    session = Session(reader, writer)
    code, text = await session.reply()
    if code != 220:
        writer.close()
        raise SmtpError("banner", code, text)
    await session.command(b"EHLO client.example\r\n", "EHLO", 250)
    return session


async def send_one(host: str, port: int, rcpt: str, raw: bytes) -> float:
    """One whole session (connect, EHLO, one message, QUIT); its time in seconds to the 250."""
    started = time.perf_counter()
    session = await connect(host, port)
    await session.send(SENDER, rcpt, data_payload(raw))
    elapsed = time.perf_counter() - started
    await session.quit()
    return elapsed


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # MAIL → 250 after the data, seconds
    steps: list[list[float]] = field(default_factory=list)  # MAIL, RCPT, DATA, the data
    errors: dict[str, int] = field(default_factory=dict)  # "step code" → how many
    first: float = 0.0
    last: float = 0.0
    cpu_at_go: float = 0.0  # this process's CPU seconds when the clock started


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def load(spec: dict[str, Any], go: asyncio.Future[float]) -> Result:
    host, port, tag = spec["host"], spec["port"], spec["tag"]
    rcpts = spec["rcpt"] if isinstance(spec["rcpt"], list) else [spec["rcpt"]]
    numbers = list(range(spec["first"], spec["count"], spec["step"]))
    rate = spec.get("rate")
    to = {n: rcpts[n % len(rcpts)] for n in numbers}  # spread over the conversations
    payloads = {n: data_payload(message(n, to[n], tag)) for n in numbers}
    queue = list(reversed(numbers))
    result = Result()
    sessions = await asyncio.gather(*(connect(host, port) for _ in range(spec["sessions"])))
    print("ready", flush=True)
    start = await go
    result.cpu_at_go = cpu_seconds()

    async def run(session: Session) -> None:
        while queue:
            number = queue.pop()
            if rate:  # message n is offered at start + n / rate, whichever session is free
                delay = start + number / rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            try:
                steps = await session.send(SENDER, to[number], payloads[number])
            except SmtpError as exc:
                key = f"{exc.step} {exc.code}"
                result.errors[key] = result.errors.get(key, 0) + 1
                try:
                    await session.command(b"RSET\r\n", "RSET", 250)
                except (SmtpError, OSError, ConnectionError):
                    return
                continue
            except (OSError, ConnectionError) as exc:
                key = type(exc).__name__
                result.errors[key] = result.errors.get(key, 0) + 1
                return
            result.latencies.append(sum(steps))
            result.steps.append(steps)
        await session.quit()

    result.first = time.time()
    await asyncio.gather(*(run(s) for s in sessions))
    result.last = time.time()
    return result


async def idle(spec: dict[str, Any], stop: asyncio.Event) -> dict[str, Any]:
    """Open ``idle`` connections, say EHLO on each, wait; then count those still open."""
    sessions: list[Session] = []
    failed: dict[str, int] = {}
    for start in range(0, spec["idle"], 100):  # in batches: a backlog of 1,000 SYNs overflows
        batch = await asyncio.gather(
            *(connect(spec["host"], spec["port"]) for _ in range(min(100, spec["idle"] - start))),
            return_exceptions=True,
        )
        for item in batch:
            if isinstance(item, Session):
                sessions.append(item)
            else:
                failed[type(item).__name__] = failed.get(type(item).__name__, 0) + 1
    print("ready", flush=True)
    await stop.wait()
    alive = 0
    for session in sessions:
        try:
            await asyncio.wait_for(session.command(b"NOOP\r\n", "NOOP", 250), 5)
            alive += 1
        except (SmtpError, OSError, ConnectionError, TimeoutError):
            pass
    await asyncio.gather(*(s.quit() for s in sessions))
    return {"opened": len(sessions), "alive_at_end": alive, "failed": failed}


@dataclass
class Load:
    latencies: list[float]
    first: float
    last: float
    errors: dict[str, int]
    client_cpu: float  # seconds, all client processes, from "go"
    usage: stats.Usage | None  # of the server, from "go" to the last answer
    steps: list[list[float]]  # per message: MAIL, RCPT, DATA, the data (seconds each)

    def step_medians(self) -> str:
        """The median time of each of the four answers: which one the server is slow at."""
        names = ("MAIL", "RCPT", "DATA", "data")
        medians = [statistics.median(column) * 1000 for column in zip(*self.steps, strict=True)]
        return ", ".join(f"{name} {value:.1f}" for name, value in zip(names, medians, strict=True))

    @property
    def rate(self) -> float:
        return len(self.latencies) / (self.last - self.first)


async def run_load(
    port: int,
    rcpt: str | list[str],
    tag: str,
    count: int,
    rate: float | None = None,
    server: stats.Watched | None = None,
) -> Load:
    """``count`` messages through 20 sessions in two client processes, started together;
    ``server``'s memory and CPU are watched from the start."""
    procs = []
    for index in range(CLIENT_PROCS):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Each client's result is one JSON line with every latency in it: over asyncio's
            # 64 KiB line limit past about 1,500 messages a client.
            limit=2**26,
        )
        spec = {
            "host": "127.0.0.1",
            "port": port,
            "rcpt": rcpt,
            "tag": tag,
            "count": count,
            "first": index,
            "step": CLIENT_PROCS,
            "sessions": SESSIONS // CLIENT_PROCS,
            "rate": rate,
        }
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(spec).encode() + b"\n")
        procs.append(proc)
    for proc in procs:
        assert proc.stdout is not None
        if (await proc.stdout.readline()).strip() != b"ready":
            raise RuntimeError("a client could not connect")
    if server is not None:
        server.reset()
    go = time.time()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"go {go}\n".encode())
    results = []
    for proc in procs:
        assert proc.stdout is not None
        results.append(json.loads(await proc.stdout.readline()))
    usage = server.usage() if server is not None else None
    for proc in procs:
        await proc.wait()
    errors: dict[str, int] = {}
    for result in results:
        for key, n in result["errors"].items():
            errors[key] = errors.get(key, 0) + n
    return Load(
        latencies=[x for r in results for x in r["latencies"]],
        first=min(r["first"] for r in results),
        last=max(r["last"] for r in results),
        errors=errors,
        client_cpu=sum(r["cpu_seconds"] for r in results),
        usage=usage,
        steps=[x for r in results for x in r["steps"]],
    )


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    spec = json.loads(await reader.readline())
    go: asyncio.Future[float] = loop.create_future()
    stop = asyncio.Event()

    async def listen() -> None:
        while line := await reader.readline():
            word, *rest = line.split()
            if word == b"go":
                go.set_result(float(rest[0]))
            elif word == b"stop":
                stop.set()

    listener = asyncio.create_task(listen())
    if spec.get("idle"):
        out: dict[str, Any] = await idle(spec, stop)
    else:
        found = await load(spec, go)
        out = found.__dict__
    out["cpu_seconds"] = cpu_seconds() - out.get("cpu_at_go", 0.0)  # since "go", for a load
    listener.cancel()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
