"""What TLS and AUTH cost per SMTP session, against a plain session, measured side by side.

One node on loopback (no worker, no web), and the same session again and again: connect,
EHLO, (STARTTLS | implicit TLS), (AUTH PLAIN), MAIL, RCPT to a routed address, DATA of a
small message, QUIT. Each kind runs ``--sessions`` times in turn, in rounds, so the kinds
share the machine's conditions; the median session time and its ratio to a plain session
are printed. The AUTH figure includes the scrypt check (run in a thread).

    .venv/bin/python benchmarks/transport_speed.py [--sessions 200]
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

from mailbot import Mailbot  # noqa: E402
from mailbot.bots.comments import CommentsBot  # noqa: E402
from mailbot.serve import Node, running  # noqa: E402
from mailbot.smtp.submitters import hash_password  # noqa: E402
from mailbot.testing import build_mail, settings_for  # noqa: E402
from tests.transport import PASSWORD, client  # noqa: E402

KINDS = ("plain", "starttls", "implicit tls", "starttls + auth")


async def session(node: Node, kind: str, raw: bytes) -> float:
    start = time.perf_counter()
    smtp = client(node, implicit=kind == "implicit tls")
    async with smtp:
        if kind.startswith("starttls"):
            await smtp.starttls()
        if kind.endswith("auth"):
            await smtp.login("webapp", PASSWORD)
        await smtp.sendmail("someone@example.com", ["support@localhost"], raw)
    return time.perf_counter() - start


async def main(sessions: int) -> None:
    app = Mailbot(bots=[CommentsBot], routes=[("support", CommentsBot)])
    raw = build_mail("someone@example.com", "support@localhost", "A short message.\n" * 20)
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(
            Path(tmp), smtps_port=0, smtp_users={"webapp": hash_password(PASSWORD)}
        )
        async with running(settings, app, work=False, http=False) as node:
            times: dict[str, list[float]] = {kind: [] for kind in KINDS}
            for kind in KINDS:  # warm up: the first handshake loads OpenSSL's tables
                await session(node, kind, raw)
            for _ in range(sessions):
                for kind in KINDS:
                    times[kind].append(await session(node, kind, raw))
    plain = statistics.median(times["plain"])
    print(f"{'session':<18}{'median ms':>10}{'sessions/s':>12}{'× plain':>9}")
    for kind in KINDS:
        median = statistics.median(times[kind])
        print(f"{kind:<18}{median * 1000:>10.2f}{1 / median:>12.0f}{median / plain:>9.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=200)
    asyncio.run(main(parser.parse_args().sessions))
