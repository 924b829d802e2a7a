"""Memory after big mail: does a node give it back?

The hardening issue measured a node growing from 0.6 to 4.5 GB over repeated 24 MiB
messages and never shrinking. This runs ``mailbot serve`` (SQLite, two analyser processes,
default settings) and, beside it in the same run, a bare aiosmtpd server that accepts and
discards, and sends each the same ``--count`` messages of ``--size-mb`` MiB (a short reply
with a big base64 attachment) through the same client. It prints the resident memory
(VmRSS, MiB) of mailbot's main process and its analyser processes, and of the bare server:
at start, the highest seen, and after the last message was processed.

    .venv/bin/python benchmarks/big_mail_memory.py [--count 10] [--size-mb 24]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server_stats import tree, wait_port  # noqa: E402

from mailbot.testing import smtp_send  # noqa: E402

BARE = """
import asyncio, sys
from aiosmtpd.smtp import SMTP
class Discard:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Discard(), hostname="bare", data_size_limit=64 * 2**20), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    return tree(pid)[1:]  # tree() lists pid first


def big_reply(to: str, size_mb: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = to
    msg["Subject"] = "Re: the logs"
    msg.set_content("Here are the logs you asked for.")
    msg.add_attachment(
        os.urandom(size_mb * 1024 * 1024 * 3 // 4),
        maintype="application",
        subtype="octet-stream",
        filename="logs.bin",
    )
    return msg.as_bytes()


def api(port: int, path: str) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        data: list[dict[str, object]] = json.load(response)
        return data


async def run_mailbot(count: int, size_mb: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "MAILBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/mailbot.db",
            "MAILBOT_HOME": tmp,
            "MAILBOT_SMTP_PORT": "25251",
            "MAILBOT_HTTP_PORT": "25252",
            "MAILBOT_MAX_MESSAGE_SIZE": str((size_mb + 8) * 2**20),
        }
        cli = [str(ROOT / ".venv/bin/mailbot")]
        address = subprocess.run(
            [*cli, "reply-address", "bench", "alice@example.com"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        server = subprocess.Popen([*cli, "serve"], env=env, stderr=subprocess.DEVNULL)
        try:
            await wait_port(25251)
            await wait_port(25252)
            await asyncio.sleep(1)
            figures = {"main_start": rss_mb(server.pid)}
            figures["analysers_start"] = sum(rss_mb(c) for c in children(server.pid))
            peak_main = peak_children = 0.0
            after_each: list[float] = []
            raw = big_reply(address, size_mb)
            for _ in range(count):
                result = await smtp_send(25251, "alice@example.com", [address], raw)
                assert result.data_code == 250, result
                while True:
                    peak_main = max(peak_main, rss_mb(server.pid))
                    peak_children = max(peak_children, sum(rss_mb(c) for c in children(server.pid)))
                    rows = api(25252, "/api/messages?limit=1")
                    if rows and rows[0]["status"] not in ("pending", "processing"):
                        break
                    await asyncio.sleep(0.2)
                after_each.append(rss_mb(server.pid))
            series = " ".join(f"{m:.0f}" for m in after_each)
            print(f"mailbot main process after each message (MiB): {series}")
            await asyncio.sleep(2)
            figures.update(
                main_peak=peak_main,
                main_end=rss_mb(server.pid),
                analysers_peak=peak_children,
                analysers_end=sum(rss_mb(c) for c in children(server.pid)),
            )
            return figures
        finally:
            server.terminate()
            server.wait(30)


async def sample_peak(pid: int, peak: list[float]) -> None:
    while True:
        peak[0] = max(peak[0], rss_mb(pid))
        await asyncio.sleep(0.02)


async def run_bare(count: int, size_mb: int) -> dict[str, float]:
    server = subprocess.Popen([sys.executable, "-c", BARE], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        figures = {"start": rss_mb(server.pid)}
        raw = big_reply("someone@bare.test", size_mb)
        peak = [0.0]
        sampler = asyncio.create_task(sample_peak(server.pid, peak))
        for _ in range(count):
            result = await smtp_send(port, "alice@example.com", ["someone@bare.test"], raw)
            assert result.data_code == 250, result
        sampler.cancel()
        await asyncio.sleep(2)
        figures.update(peak=peak[0], end=rss_mb(server.pid))
        return figures
    finally:
        server.terminate()
        server.wait(30)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--size-mb", type=int, default=24)
    args = parser.parse_args()
    started = time.perf_counter()
    bare = await run_bare(args.count, args.size_mb)
    mailbot = await run_mailbot(args.count, args.size_mb)
    print(f"{args.count} messages of {args.size_mb} MiB each; resident memory in MiB")
    print(f"{'':28} {'start':>8} {'peak':>8} {'after':>8}")
    print(
        f"{'bare aiosmtpd (discards)':28} {bare['start']:8.0f} "
        f"{bare['peak']:8.0f} {bare['end']:8.0f}"
    )
    print(
        f"{'mailbot main process':28} {mailbot['main_start']:8.0f} "
        f"{mailbot['main_peak']:8.0f} {mailbot['main_end']:8.0f}"
    )
    print(
        f"{'mailbot analysers (sum)':28} {mailbot['analysers_start']:8.0f} "
        f"{mailbot['analysers_peak']:8.0f} {mailbot['analysers_end']:8.0f}"
    )
    growth = mailbot["main_end"] - mailbot["main_start"]
    bare_growth = bare["end"] - bare["start"]
    print(
        f"kept after the run: mailbot main +{growth:.0f} MiB, bare aiosmtpd +{bare_growth:.0f} MiB"
        f" ({time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    asyncio.run(main())
