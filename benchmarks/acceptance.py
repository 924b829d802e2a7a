"""SMTP acceptance latency while heavy mail is being analysed: thread vs process pool.

The claim this measures: MIME parsing and talon run off the SMTP event loop, so a node that
is busy stripping big HTML mail still answers the next sender quickly. Each mode gets the
same load in one run: ``--heavy`` big HTML-only replies are sent first, then ``--light``
small replies are sent one after another while the big ones are worked on; the time from
connect to the 250 after DATA is recorded for each small one.

    .venv/bin/python benchmarks/acceptance.py [--heavy 6] [--light 60] [--size-kb 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailbot.bots.default import app  # noqa: E402
from mailbot.serve import running  # noqa: E402
from mailbot.store.models import InboundStatus  # noqa: E402
from mailbot.testing import (  # noqa: E402
    SmtpSink,
    build_mail,
    make_thread,  # noqa: E402
    settings_for,
    smtp_send,
    wait_for_status,
)


def heavy_html(size_kb: int) -> str:
    row = "<tr><td><b>cell</b></td><td><i>value</i> <a href='https://x.example/'>link</a></td></tr>"
    rows = row * (size_kb * 1024 // len(row))
    return (
        f"<html><body><div>Here is the report you asked for.</div><table>{rows}</table>"
        "<div class='gmail_quote'>On Mon, Bob wrote:<blockquote>old</blockquote></div>"
        "</body></html>"
    )


async def measure(cpu_workers: int, heavy: int, light: int, size_kb: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with SmtpSink() as sink:
            settings = settings_for(Path(tmp), sink, cpu_workers=cpu_workers, worker_concurrency=2)
            async with running(settings, app, http=False) as node:
                thread = await make_thread(node, people=("alice", "bob"))
                address = thread.addresses["alice"]
                big = build_mail("alice@example.com", address, "", html=heavy_html(size_kb))
                big_ids = [
                    (
                        await smtp_send(node.smtp_port, "alice@example.com", [address], big)
                    ).inbound_id
                    for _ in range(heavy)
                ]
                latencies = []
                for i in range(light):
                    small = build_mail("alice@example.com", address, f"Quick reply {i}.")
                    start = time.perf_counter()
                    result = await smtp_send(node.smtp_port, "alice@example.com", [address], small)
                    latencies.append(time.perf_counter() - start)
                    assert result.data_code == 250
                    await asyncio.sleep(0.02)
                started = time.perf_counter()
                for inbound_id in big_ids:
                    row = await wait_for_status(node.sessions, inbound_id, timeout=600)
                    assert row.status in (InboundStatus.delivered, InboundStatus.rejected), (
                        row.reason
                    )
                drain = time.perf_counter() - started
    latencies.sort()
    return {
        "median_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[int(len(latencies) * 0.95) - 1] * 1000,
        "max_ms": latencies[-1] * 1000,
        "drain_s": drain,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heavy", type=int, default=6)
    parser.add_argument("--light", type=int, default=60)
    parser.add_argument("--size-kb", type=int, default=1500)
    args = parser.parse_args()
    print(f"{args.heavy} heavy HTML mails of {args.size_kb} KB, {args.light} light replies timed")
    results = {}
    for label, workers in (
        ("idle (no heavy mail)", -1),
        ("thread (cpu_workers=0)", 0),
        ("process (cpu_workers=1)", 1),
    ):
        if workers < 0:
            results[label] = await measure(1, 0, args.light, args.size_kb)
        else:
            results[label] = await measure(workers, args.heavy, args.light, args.size_kb)
        r = results[label]
        print(
            f"{label:<26} accept median {r['median_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms"
            f"  max {r['max_ms']:7.1f} ms"
        )
    thread, process = results["thread (cpu_workers=0)"], results["process (cpu_workers=1)"]
    print(
        f"ratio thread/process: median {thread['median_ms'] / process['median_ms']:.1f}x, "
        f"p95 {thread['p95_ms'] / process['p95_ms']:.1f}x, "
        f"max {thread['max_ms'] / process['max_ms']:.1f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
