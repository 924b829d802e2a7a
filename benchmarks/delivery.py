"""Outbound delivery: mailbot's outbox next to a bare aiosmtplib loop, same messages, one run.

    .venv/bin/python benchmarks/delivery.py [--messages 1000] [--rounds 3]

The receiver is Postfix's ``smtp-sink`` (Debian package ``postfix``; a bare aiosmtpd server
that accepts and discards without it), its own process, so it is never the limit. Rows, each
round in turn so they share the machine's conditions, the median of the rounds printed:

- bare aiosmtplib, one connection: ``sendmail`` for each message, one after another;
- bare aiosmtplib, two connections side by side (what the outbox opens to one destination by
  default, ``MAILBOT_DELIVERY_CONNECTIONS_PER_DESTINATION=2``);
- mailbot's outbox (mailbot/outbound/delivery.py ``deliver_due`` through the relay
  transport, in passes of 100) on a fresh SQLite database with every message ``queued``:
  leased, sent over reused connections, each outcome committed (``sent``, the reply address
  scrubbed) before the next pass. The same with a DKIM key (RSA 2048), signed per message.

Messages are 4 KiB notifications composed by mailbot's own composer, one recipient each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import SINK, bare, smtp_sink  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from mailbot.config import Settings  # noqa: E402
from mailbot.outbound import delivery, signing  # noqa: E402
from mailbot.outbound.compose import AUTO_GENERATED, compose  # noqa: E402
from mailbot.store.db import database, upgrade  # noqa: E402
from mailbot.store.models import OutboundMessage, OutboundStatus  # noqa: E402

BODY = "A comment of about four kilobytes, as a notification carries it.\n" * 62


def messages(settings: Settings, count: int) -> list[tuple[str, bytes]]:
    out = []
    for n in range(count):
        to = f"person{n}@example.net"
        raw = compose(
            settings,
            sender_name="Alice (via mailbot)",
            to_name=f"Person {n}",
            recipient=to,
            reply_to=f"reply+{n:026d}@{settings.domain}",
            subject=f"Re: [issue-1] comment {n}",
            body=BODY,
            message_id=f"<bench-{n}@{settings.hostname}>",
            thread=("<root@localhost>", "<root@localhost>"),
            auto_submitted=AUTO_GENERATED,
            conversation_key="issue-1",
            list_id=f"conversation-1.{settings.domain}",
        )
        out.append((to, raw))
    return out


async def bare_loop(port: int, mails: list[tuple[str, bytes]], connections: int) -> float:
    async def one_connection(share: list[tuple[str, bytes]]) -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as smtp:
            for to, raw in share:
                await smtp.sendmail("bounces@localhost", [to], raw)

    start = time.perf_counter()
    await asyncio.gather(*(one_connection(mails[i::connections]) for i in range(connections)))
    return len(mails) / (time.perf_counter() - start)


async def outbox(port: int, mails: list[tuple[str, bytes]], dkim: Path | None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{tmp}/bench.db",
            relay=f"smtp://127.0.0.1:{port}",
            dns="offline",
            max_sends_per_address_per_hour=0,
            dkim_key=dkim,
            dkim_selector="bench" if dkim else None,
        )
        async with database(settings.database_url) as (engine, sessions):
            await upgrade(engine)
            async with sessions() as session, session.begin():
                session.add_all(
                    OutboundMessage(
                        status=OutboundStatus.queued,
                        message_id=f"<bench-{n}@localhost>",
                        mail_from=f"bounces+{n:020d}@localhost",
                        recipient=to,
                        reply_to=f"reply+{n:026d}@localhost",
                        subject="x",
                        raw=raw,
                    )
                    for n, (to, raw) in enumerate(mails)
                )
            transport = delivery.transport_for(settings)
            assert transport is not None
            start = time.perf_counter()
            try:
                while await delivery.deliver_due(sessions, settings, transport=transport):
                    pass
            finally:
                await delivery.close(transport)
            elapsed = time.perf_counter() - start
            async with sessions() as session:
                sent = await session.scalar(
                    select(func.count()).where(OutboundMessage.status == OutboundStatus.sent)
                )
            assert sent == len(mails), f"only {sent} of {len(mails)} sent"
    return len(mails) / elapsed


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[tuple[str, int]]:
    if Path(SINK).exists():
        async with smtp_sink() as (_, port):
            yield "Postfix smtp-sink", port
    else:
        async with bare() as (_, port):
            yield "bare aiosmtpd (smtp-sink not installed)", port


def dkim_key(directory: Path) -> Path:
    key = signing.new_key("rsa")
    path = directory / "bench.private"
    path.write_bytes(key)
    return path


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = Settings(dns="offline")
    mails = messages(settings, args.messages)
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as keys:
        key = dkim_key(Path(keys))
        async with receiver() as (name, port):
            for _ in range(args.rounds):
                for label, run in (
                    ("bare aiosmtplib, 1 connection", lambda: bare_loop(port, mails, 1)),
                    ("bare aiosmtplib, 2 connections", lambda: bare_loop(port, mails, 2)),
                    ("mailbot outbox (SQLite)", lambda: outbox(port, mails, None)),
                    ("mailbot outbox (SQLite, DKIM RSA 2048)", lambda: outbox(port, mails, key)),
                ):
                    rows.setdefault(label, []).append(await run())
    base = statistics.median(rows["bare aiosmtplib, 1 connection"])
    print(f"{args.messages} messages of {len(mails[0][1]) // 1024} KiB to {name}, ", end="")
    print(f"median of {args.rounds} rounds")
    print(f"{'':40} {'messages/s':>12} {'× bare (1 conn)':>16}")
    for label, figures in rows.items():
        rate = statistics.median(figures)
        print(f"{label:40} {rate:12.0f} {rate / base:16.2f}")


if __name__ == "__main__":
    asyncio.run(main())
