"""What a reply costs coming in by a provider's webhook, against the same reply by SMTP.

One node on loopback (SQLite, no worker: acceptance only) and one client, one message after
another, in rounds so both ways share the machine's conditions: a Mailgun post (multipart,
signed, sent in one write) until its 200, and an SMTP transaction (MAIL, RCPT, DATA) until
its 250. Both are committed before they are answered. Then one message near the default
size limit by webhook, with the node's peak memory.

    .venv/bin/python benchmarks/ingress_speed.py [--messages 200]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailbot.bots.default import app  # noqa: E402
from mailbot.serve import Node, running  # noqa: E402
from mailbot.testing import build_mail, make_thread, settings_for, smtp_send  # noqa: E402
from tests.test_ingress import MAILGUN_KEY, _mailgun  # noqa: E402
from tests.test_web_api import _request  # noqa: E402

PATH = "/ingress/mailgun/messages.mime"


async def by_webhook(node: Node, raw: bytes, address: str) -> float:
    content_type, body = _mailgun(raw, address, "alice@example.com")
    start = time.perf_counter()
    code, _, said = await _request(
        node.http_port, "POST", PATH, raw_body=body, headers={"Content-Type": content_type}
    )
    assert code == 200, said
    return time.perf_counter() - start


async def by_smtp(node: Node, raw: bytes, address: str) -> float:
    start = time.perf_counter()
    sent = await smtp_send(node.smtp_port, "alice@example.com", [address], raw)
    assert sent.data_code == 250, sent
    return time.perf_counter() - start


async def main(messages: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(Path(tmp), mailgun_signing_key=MAILGUN_KEY)
        async with running(settings, app, work=False) as node:
            address = (await make_thread(node)).addresses["alice"]
            times: dict[str, list[float]] = {"webhook": [], "smtp": []}
            for i in range(messages):
                raw = build_mail("alice@example.com", address, f"Reply number {i}.")
                times["webhook"].append(await by_webhook(node, raw, address))
                times["smtp"].append(await by_smtp(node, raw, address))
            for way, taken in times.items():
                median = statistics.median(taken)
                print(f"{way:8} median {median * 1000:6.1f} ms, {1 / median:5.0f} messages/s")
            big = build_mail("alice@example.com", address, "x" * (24 * 1024 * 1024))
            before = _rss_mib()
            one = await by_webhook(node, big, address)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"one {len(big) / 2**20:.1f} MiB message by webhook: {one:.2f} s; client and")
            print(f"node together: {before:.0f} MiB resident before it, peak {peak:.0f} MiB")


def _rss_mib() -> float:
    """Resident memory now (Linux), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    asyncio.run(main(parser.parse_args().messages))
