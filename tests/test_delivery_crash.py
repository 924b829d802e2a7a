"""Crash safety of outbound delivery (issue #13): ``mailbot serve`` killed with SIGKILL while
mails are ``sending``, restarted on the same database, until the outbox is empty.

The relay is a sink in this process that answers each DATA slowly, so every kill finds mails
in the middle of their dialogue. Every queued mail must arrive; a mail may arrive twice only
in the window SMTP itself leaves: the sink had taken it (and said 250) when the node died,
before the node could record it as sent.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from mailbot.store.db import database, upgrade
from mailbot.store.models import OutboundMessage, OutboundStatus
from tests.sinks import ScriptedSink
from tests.test_exactly_once import _queue_directly
from tests.test_several_nodes import Store, node_env, start_node, stop_node

MAILS = 60
KILLS = 4


async def test_sigkill_while_sending_loses_no_mail_and_repeats_only_what_smtp_cannot_tell(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'mailbot.db'}"
    async with database(url) as (engine, sessions):
        await upgrade(engine)
        await _queue_directly(Store(None, sessions), MAILS)  # type: ignore[arg-type]
        queued = {f"p{i}@example.com" for i in range(MAILS)}  # one mail to each

        async def rows() -> list[OutboundMessage]:
            async with sessions() as session:
                return list(await session.scalars(select(OutboundMessage)))

        # Per mail, the kills at which the sink had it and the node had not recorded it sent.
        window: Counter[str] = Counter()
        async with ScriptedSink(delay=0.15) as sink:
            env = node_env(url, tmp_path, MAILBOT_RELAY=sink.url, MAILBOT_RELAY_TIMEOUT="5")
            log = tmp_path / "serve.log"
            for _ in range(KILLS):
                node = await start_node(env, log)
                async with asyncio.timeout(60):
                    while not sink.in_data:  # a mail's DATA is under way
                        await asyncio.sleep(0.01)
                await asyncio.sleep(random.uniform(0, 0.3))  # noqa: S311 - anywhere in it
                node.process.kill()
                await node.process.wait()
                async with asyncio.timeout(10):
                    while sink.in_data:  # the sink finishes what it was reading: taken
                        await asyncio.sleep(0.01)
                taken = {m.rcpt_tos[0] for m in sink.received}
                sending = {r.recipient for r in await rows() if r.status != OutboundStatus.sent}
                window.update(taken & sending)
            node = await start_node(env, log)
            try:
                async with asyncio.timeout(120):
                    while any(r.status != OutboundStatus.sent for r in await rows()):
                        await asyncio.sleep(0.1)
            finally:
                await stop_node(node)
            final = await rows()

    arrived = Counter(m.rcpt_tos[0] for m in sink.received)
    assert set(arrived) == queued  # every mail arrived
    # More than once only for a kill in the window SMTP itself leaves, once per such kill.
    extra = {to: n - 1 for to, n in arrived.items() if n > 1}
    assert all(n <= window[to] for to, n in extra.items()), (extra, window)
    assert {r.status for r in final} == {OutboundStatus.sent}
    assert node.text.count("--- start") == KILLS + 1
