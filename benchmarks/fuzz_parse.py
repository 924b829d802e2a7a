"""Fuzz figures: N hostile messages through screen + parse + strip, as the analyser runs them.

Messages come from :mod:`mailbot.testing.hostile` (made-up hostile mail, raw bytes, and
mutations of the shared corpora when present), seeded, so a run can be repeated. Prints the
number of messages, the refusals of the screen by code, the exceptions (must be 0), parse's
last-resort guard (``ParseError`` defects, should be 0), and for the messages the screen let
through: max and p99 time of screen + parse and of strip, and the largest tracemalloc peak.
Slowest messages are listed with their index, to be re-made with ``--only``.

    .venv/bin/python benchmarks/fuzz_parse.py [-n 6000] [--seed 1] [--only INDEX --save FILE]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailbot.parse import parse  # noqa: E402
from mailbot.screen import Limits, screen_headers, screen_structure  # noqa: E402
from mailbot.strip.reply import load_signature_model, strip  # noqa: E402
from mailbot.testing.hostile import corpus_messages, hostile_mail  # noqa: E402

CORPORA = ROOT.parent / "shared" / "corpora"


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else max(values, default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=6000, help="messages (default 6000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-size", type=int, default=1024 * 1024, help="bytes per message")
    parser.add_argument("--only", type=int, help="make message INDEX only (with --save)")
    parser.add_argument("--save", type=Path, help="write message --only INDEX to this file")
    args = parser.parse_args()

    corpus = corpus_messages(CORPORA) if CORPORA.is_dir() else []
    rng = random.Random(args.seed)
    if args.only is not None:
        for _ in range(args.only):
            hostile_mail(rng, corpus, args.max_size)
        raw = hostile_mail(rng, corpus, args.max_size)
        if args.save:
            args.save.write_bytes(raw)
        print(f"message {args.only}: {len(raw)} bytes")
        return

    load_signature_model()
    limits = Limits()
    refused: Counter[str] = Counter()
    exceptions: Counter[str] = Counter()
    guarded = 0
    parse_times: list[float] = []
    strip_times: list[float] = []
    slowest: list[tuple[float, float, int, int]] = []
    peak_max = 0
    sizes = 0
    started = time.perf_counter()
    for index in range(args.n):
        raw = hostile_mail(rng, corpus, args.max_size)
        sizes += len(raw)
        try:
            t0 = time.perf_counter()
            refusal = screen_headers(raw, limits) or screen_structure(raw, limits)
            tracemalloc.start()
            t1 = time.perf_counter()
            mail = parse(raw)
            t2 = time.perf_counter()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            t3 = time.perf_counter()
            strip(mail.text, mail.html, mail.sender)
            t4 = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 - counted: the figure that must be 0
            tracemalloc.stop()
            exceptions[type(exc).__name__] += 1
            print(f"  exception at message {index}: {exc!r}", file=sys.stderr)
            continue
        guarded += any(d.startswith("ParseError") for d in mail.defects)
        if refusal is not None:
            refused[refusal.code] += 1
            continue
        parse_times.append((t1 - t0) + (t2 - t1))
        strip_times.append(t4 - t3)
        peak_max = max(peak_max, peak)
        slowest.append((parse_times[-1], strip_times[-1], index, len(raw)))

    elapsed = time.perf_counter() - started
    passed = len(parse_times)
    print(f"messages:            {args.n} (seed {args.seed}, {sizes / args.n / 1024:.1f} KiB mean)")
    print(f"refused by screen:   {sum(refused.values())}  {dict(refused.most_common())}")
    print(f"exceptions:          {sum(exceptions.values())}  {dict(exceptions)}")
    print(f"parse guard used:    {guarded} (ParseError defects)")
    print(f"let through:         {passed}")
    for what, times in (("screen+parse", parse_times), ("strip", strip_times)):
        print(f"{what + ' time:':<21}max {max(times, default=0):.3f} s, p99 {p99(times):.4f} s")
    print(f"tracemalloc peak:    max {peak_max / 1024 / 1024:.1f} MiB (parse)")
    print(f"wall time:           {elapsed:.1f} s")
    for what, key in (("screen+parse", 0), ("strip", 1)):
        worst = sorted(slowest, key=lambda row: row[key], reverse=True)[:3]
        shown = ", ".join(f"#{i} {row[key]:.2f} s ({size} B)" for *row, i, size in worst)
        print(f"slowest {what}: {shown}")


if __name__ == "__main__":
    main()
