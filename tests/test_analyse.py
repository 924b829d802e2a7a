"""The analyser process pool survives a message that hangs it or kills its worker."""

from __future__ import annotations

import os
import signal

import pytest

from mailbot.analyse import Analyser
from mailbot.errors import TransientError
from mailbot.testing import build_mail


async def test_a_hung_analysis_is_abandoned_and_the_next_message_is_analysed() -> None:
    async with Analyser(1, timeout=0.01) as analyse:
        huge = build_mail("a@example.com", "b@example.com", "word " * 2_000_000)
        with pytest.raises(TransientError, match="timed out"):
            await analyse(huge)
        analyse.timeout = 60
        result = await analyse(build_mail("a@example.com", "b@example.com", "Small one."))
    assert result.reply == "Small one."


async def test_a_killed_worker_process_is_replaced() -> None:
    async with Analyser(1) as analyse:
        first = await analyse(build_mail("a@example.com", "b@example.com", "Before."))
        assert first.reply == "Before."
        pool = analyse._pool
        assert pool is not None
        for process in list(pool._processes.values()):  # type: ignore[attr-defined]
            os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(TransientError, match="crashed"):
            await analyse(build_mail("a@example.com", "b@example.com", "During."))
        after = await analyse(build_mail("a@example.com", "b@example.com", "After."))
    assert after.reply == "After."
