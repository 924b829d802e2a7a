"""The analyser processes: one slot each, capped in time and memory, replaced when spoiled."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from mailbot.errors import Rejection, TransientError
from mailbot.pipeline.analyse import TOO_COSTLY, Analyser
from mailbot.testing import build_mail

SMALL = build_mail("a@example.com", "b@example.com", "Small one.")


async def test_a_message_over_the_time_cap_is_refused_once_and_its_process_replaced() -> None:
    async with Analyser(1, timeout=0.01) as analyse:
        before = analyse.pids
        huge = build_mail("a@example.com", "b@example.com", "word " * 2_000_000)
        with pytest.raises(Rejection, match="longer than") as refused:
            await analyse(huge)
        assert refused.value.code == TOO_COSTLY
        analyse.timeout = 60
        result = await analyse(SMALL)
        assert analyse.replaced == 1
        assert analyse.pids and set(analyse.pids).isdisjoint(before)
    assert result.reply == "Small one."


def _vm_peak_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmPeak:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmPeak")


async def test_a_message_over_the_memory_cap_is_refused_and_the_next_one_is_analysed() -> None:
    # The cap is what a warm analyser process maps plus a margin a 40 MB message exceeds
    # while it is parsed (and not while its bytes are handed over).
    async with Analyser(1, memory_mb=0) as probe:
        await probe(SMALL)
        warm = _vm_peak_mb(probe.pids[0])
    async with Analyser(1, memory_mb=int(warm) + 120) as analyse:
        raw = (
            b"From: a@example.com\r\nTo: b@example.com\r\nSubject: big\r\n"
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            + b"A line of text that goes on.\r\n"
            * (40 * 1024 * 1024 // 30)
        )
        with pytest.raises(Rejection) as refused:
            await analyse(raw)
        assert refused.value.code == TOO_COSTLY
        assert analyse.replaced == 1
        del raw
        result = await analyse(SMALL)
    assert result.reply == "Small one."


async def test_a_killed_worker_process_is_replaced() -> None:
    async with Analyser(1) as analyse:
        first = await analyse(build_mail("a@example.com", "b@example.com", "Before."))
        assert first.reply == "Before."
        for pid in analyse.pids:
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(TransientError, match="crashed"):
            await analyse(build_mail("a@example.com", "b@example.com", "During."))
        after = await analyse(build_mail("a@example.com", "b@example.com", "After."))
    assert after.reply == "After."


def _slow_to_parse() -> bytes:
    # 6 million short lines in one part: about 2 s of parsing (linear, but line by line in
    # Python), a thousand times a small reply's time.
    return (
        b"From: a@example.com\r\nTo: b@example.com\r\nSubject: s\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nhi\r\n--b\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n" + b"x\r\n" * 6_000_000 + b"--b--\r\n"
    )


async def test_a_slow_message_does_not_hold_up_a_message_in_the_other_process() -> None:
    async with Analyser(2, timeout=60) as analyse:
        slow = asyncio.create_task(analyse(_slow_to_parse()))
        while analyse._free.qsize() > 1:  # until the slow one has its process
            await asyncio.sleep(0.01)
        quick = await analyse(SMALL)
        assert quick.reply == "Small one."
        assert not slow.done()  # the quick one did not wait for it
        assert (await slow).reply == "hi"


_ANALYSER_NODE = """
import asyncio, os, sys
from mailbot.pipeline.analyse import Analyser
async def main():
    async with Analyser(1, 30):
        print("ready", flush=True)
        await asyncio.sleep(120)
asyncio.run(main())
"""


def test_analyser_processes_die_with_a_node_killed_by_sigkill() -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    node = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-c", _ANALYSER_NODE],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert node.stdout is not None and node.stdout.readline().strip() == "ready"
        found = subprocess.run(["pgrep", "-P", str(node.pid)], capture_output=True, text=True)
        children = [int(pid) for pid in found.stdout.split()]
        assert children, "the analyser runs in a process of its own"
    finally:
        node.kill()
        node.wait()
        if node.stdout is not None:
            node.stdout.close()
    assert node.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{c}") for c in children):
        time.sleep(0.1)
    assert [c for c in children if os.path.exists(f"/proc/{c}")] == []
