"""Fixtures shared by the test files: a relay sink, a running node, conversations."""

from __future__ import annotations

import asyncio
import io
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailbot.bots.default import app as default_app
from mailbot.serve import Node, running
from mailbot.testing import SmtpSink, settings_for

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
POSTGRES_URL = os.environ.get(
    "MAILBOT_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(autouse=True)
async def no_task_left_behind() -> AsyncIterator[None]:
    """Every test must stop what it started. A task still running at the end is reported
    with its stack (and cancelled): otherwise it would stall the event loop's shutdown with
    no word about which task it was."""
    yield
    me = asyncio.current_task()
    stray = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    if not stray:
        return
    for task in stray:
        task.cancel()
    _, stuck = await asyncio.wait(stray, timeout=10)
    report = io.StringIO()
    for task in stray:
        print(f"{'REFUSES TO END' if task in stuck else 'left running'}: {task!r}", file=report)
        task.print_stack(file=report)
    raise AssertionError(f"tasks left behind by the test:\n{report.getvalue()}")


@pytest.fixture
def corpora() -> Path:
    if not CORPORA.is_dir():
        pytest.skip(f"the shared corpora are not at {CORPORA}")
    return CORPORA


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    async with SmtpSink() as started:
        yield started


@pytest.fixture
async def node(tmp_path: Path, sink: SmtpSink) -> AsyncIterator[Node]:
    async with running(settings_for(tmp_path, sink), default_app) as started:
        yield started


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import asyncpg

    base = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
    name = f"mailbot_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(base, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL is not reachable at {base}: {exc}")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
