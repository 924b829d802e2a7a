"""The work a bot's mail adds, on hostile and on ordinary input, side by side in one run:
Markdown to HTML (markdown-it-py, then nh3) at and past the 32 KiB limit, and the winmail.dat
unpacking (tnefparse behind mailbot/store/winmail.py) of a large ordinary stream.

Prints figures, never asserts: ``python benchmarks/bot_mail_work.py``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import nh3
import strip_speed  # a sibling script: benchmarks/ is on the path when run
from markdown_it import MarkdownIt

from mailbot.outbound.rendering import MAX_MARKDOWN, markdown_html
from mailbot.store import winmail


def timed(fn: Callable[[], object]) -> float:
    """Seconds, the best of three (strip_speed's timer, which counts in milliseconds)."""
    return strip_speed.timed(fn) / 1000


def _object(level: int, name: int, kind: int, data: bytes) -> bytes:
    check = sum(data) & 0xFFFF
    return struct.pack("<BHHI", level, name, kind, len(data)) + data + struct.pack("<H", check)


def tnef(files: int, size: int, mapi: bytes = b"\0" * 4) -> bytes:
    out = struct.pack("<IH", 0x223E9F78, 1) + _object(1, 0x9007, 6, struct.pack("<II", 1252, 0))
    for n in range(files):
        out += _object(2, 0x9002, 6, b"\0" * 14)
        out += _object(2, 0x8010, 1, f"FILE{n}.BIN\0".encode())
        out += _object(2, 0x800F, 6, bytes([n % 256]) * size)
        out += _object(2, 0x9005, 6, mapi)
    return out


def main() -> None:
    parser = MarkdownIt("commonmark", {"html": False})
    print("Markdown to HTML (best of 3, seconds)")
    print(f"{'input':<32} {'bytes':>8} {'render':>8} {'clean':>8} {'mailbot':>8}")
    for label, unit in [("hostile '!['", "!["), ("hostile '['", "["), ("prose", "Some *words*. ")]:
        for size in (8 * 1024, MAX_MARKDOWN, 128 * 1024):
            text = unit * (size // len(unit))
            html = parser.render(text)
            render = timed(lambda text=text: parser.render(text))
            clean = timed(lambda html=html: nh3.clean(html))
            ours = timed(lambda text=text: markdown_html(text))  # None past the limit: ~0 s
            print(f"{label:<32} {len(text):>8} {render:>8.3f} {clean:>8.3f} {ours:>8.3f}")
    print("\nwinmail.dat unpacking (best of 3, seconds)")
    for files, size in [(3, 1024 * 1024), (3, 8 * 1024 * 1024), (200, 16 * 1024)]:
        blob = tnef(files, size)
        took = timed(lambda blob=blob: winmail.unpack(blob))
        found = len(winmail.unpack(blob)[0])
        print(f"{files:>4} files of {size:>9} bytes: {took:.3f} s, {found} unpacked")
    # A MAPI block claiming 4 billion properties: tnefparse alone loops over every one.
    bomb = tnef(1, 16, mapi=struct.pack("<I", 0xFFFFFFFF) + b"\0" * 16)
    took = timed(lambda: winmail.unpack(bomb))
    print(f"hostile, 4 billion properties: {took:.4f} s, {winmail.unpack(bomb)[1]}")


if __name__ == "__main__":
    main()
