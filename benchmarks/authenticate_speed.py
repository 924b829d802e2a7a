"""What sender authentication costs per message, against parsing it, measured side by side.

SPF + DKIM + DMARC run in a worker thread for every inbound message; this prints how long
that takes (offline zone data, so DNS latency is excluded: on a real network add your
resolver's round trips) next to :func:`mailbot.parse.parse` of the same message, and their
ratio. Three messages: unsigned, one RSA-2048 DKIM signature, and two signatures.

    .venv/bin/python benchmarks/authenticate_speed.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailbot.parse import parse  # noqa: E402
from mailbot.testing import build_mail  # noqa: E402
from mailbot.trust.authenticate import authenticate  # noqa: E402
from mailbot.trust.resolver import ZoneResolver  # noqa: E402
from tests.trust_support import dkim_sign, zone  # noqa: E402


def per_call_ms(work: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    rounds = parser.parse_args().rounds
    resolver = ZoneResolver(zone())
    body = "A reply of a few lines.\n" * 20
    plain = build_mail("alice@example.com", "reply+x@mailbot.test", body).replace(b"\n", b"\r\n")
    signed = dkim_sign(plain)
    twice = dkim_sign(signed)
    print(f"{'message':<16}{'authenticate ms':>17}{'parse ms':>10}{'ratio':>8}")
    for name, raw in (("unsigned", plain), ("1 signature", signed), ("2 signatures", twice)):

        def auth(raw: bytes = raw) -> object:
            return authenticate(
                raw,
                client_ip="127.0.0.1",
                helo="mx.example.com",
                mail_from="alice@example.com",
                from_domain="example.com",
                resolver=resolver,
                authserv_id="mx.mailbot.test",
            )

        auth_ms = per_call_ms(auth, rounds)
        parse_ms = per_call_ms(lambda raw=raw: parse(raw), rounds)  # type: ignore[misc]
        print(f"{name:<16}{auth_ms:>17.3f}{parse_ms:>10.3f}{auth_ms / parse_ms:>8.1f}")


if __name__ == "__main__":
    main()
