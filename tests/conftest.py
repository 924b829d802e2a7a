"""Fixtures shared by the test files: a relay sink, a running node, conversations."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from bots.default import app as default_app
from mailbot import conversations, tokens
from mailbot.models import Conversation, Participant
from mailbot.serve import Node, running
from mailbot.testing import SmtpSink, settings_for

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
POSTGRES_URL = os.environ.get(
    "MAILBOT_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


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


@dataclass
class Thread:
    """A conversation with participants, and a fresh reply address for each."""

    conversation: Conversation
    participants: dict[str, Participant]
    addresses: dict[str, str]


async def make_thread(
    node: Node, key: str = "issue-1", people: tuple[str, ...] = ("alice", "bob", "carol")
) -> Thread:
    settings = node.settings
    async with node.sessions() as session, session.begin():
        convo = await conversations.ensure(session, key, settings.domain, subject=f"Issue {key}")
        found: dict[str, Participant] = {}
        addresses: dict[str, str] = {}
        for person in people:
            participant = await conversations.ensure_participant(
                session, convo, f"{person}@example.com", person.title()
            )
            token = await tokens.issue(session, participant, timedelta(days=30))
            found[person] = participant
            addresses[person] = tokens.reply_address(token, settings.domain)
    return Thread(convo, found, addresses)


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
