"""Per-message stripping time: the shared corpora and a few large synthetic bodies.

Prints figures, never asserts: ``python benchmarks/strip_speed.py [CORPORA_DIR]``.
mailbot and talon alone are measured side by side in the same run, on the same inputs.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

from mailbot.strip.baselines import Body, talon_alone
from mailbot.strip.evaluate import load_corpus
from mailbot.strip.reply import load_signature_model, strip

LINES = 5000
GOAL_MS = 50.0  # issue #14: no message of 5,000 lines over this


def large_bodies() -> dict[str, Body]:
    """Messages of 5,000 lines in the shapes that cost the most (issue #14)."""
    para = "This is a line of a long reply, with some words in it and a link http://x.org.\n"
    quoted = "".join(f"> {para}" for _ in range(LINES))
    inline = "".join(f"> {para}> {para}Answer {i}: yes, see above.\n\n" for i in range(LINES // 4))
    deep = "".join(f"{'>' * (1 + i % 12)} {para}" for i in range(LINES))
    blocks = "".join(
        f"<p>Paragraph {i}</p><blockquote>quote {i}</blockquote>" for i in range(LINES // 2)
    )
    outlook = "".join(f'<p class="MsoNormal">Line {i}<o:p></o:p></p>' for i in range(LINES))
    table = "".join(f"<tr><td>Item {i}</td><td>{i}</td></tr>" for i in range(LINES))
    styled = "".join(f"<style>p{{margin:{i}px}}</style>Line {i}<br>" for i in range(LINES))
    return {
        "text, 5,000 quoted lines": Body(
            "Ok.\n\nOn Mon, Bob <b@x.org> wrote:\n" + quoted, None, None
        ),
        "text, 5,000 reply lines": Body(para * LINES, None, None),
        "text, 5,000 lines of inline answers": Body(
            "On Mon, Bob <b@x.org> wrote:\n" + inline, None, None
        ),
        "text, 5,000 lines of deep quotes": Body("Ok.\n\n" + deep, None, None),
        "html, 2,500 blockquotes": Body(None, f"<html><body>{blocks}</body></html>", None),
        "html, 5,000 Outlook paragraphs": Body(None, f"<html><body>{outlook}</body></html>", None),
        "html, 5,000 table rows": Body(None, f"<table>{table}</table>", None),
        "html, 5,000 style elements": Body(None, f"<div>{styled}</div>", None),
    }


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    warnings.simplefilter("ignore")
    load_signature_model()
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[2] / "shared/corpora"
    rows = load_corpus(root) if root.is_dir() else []
    if rows:
        ours, theirs = [], []
        for row in rows:
            body = row.body()
            ours.append(timed(partial(strip, body.text, body.html, body.sender)))
            theirs.append(timed(partial(talon_alone, body)))
        for name, times in (("mailbot", ours), ("talon alone", theirs)):
            times.sort()
            p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
            print(
                f"{name:<12} {len(times)} corpus rows: median {statistics.median(times):.2f} ms,"
                f" p99 {p99:.2f} ms, max {times[-1]:.2f} ms"
            )
    over = 0
    for name, body in large_bodies().items():
        ms = timed(partial(strip, body.text, body.html, body.sender), repeat=3)
        ref = timed(partial(talon_alone, body), repeat=1)
        over += ms > GOAL_MS
        print(f"{name:<36} mailbot {ms:8.1f} ms  talon alone {ref:8.1f} ms  ratio {ms / ref:.2f}")
    print(f"over {GOAL_MS:.0f} ms at {LINES:,} lines: {over}")


if __name__ == "__main__":
    main()
