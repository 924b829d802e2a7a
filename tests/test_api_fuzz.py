"""Issue #11: the API, driven by its own OpenAPI description (schemathesis generates requests,
valid and not, for every operation), answers each with no server error and in JSON.

A real node on loopback; the generated calls go over HTTP from a thread while the node's
event loop serves them.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Err

from mailbot.bots.default import app
from mailbot.serve import Node, running
from mailbot.testing import make_thread, reply, settings_for

EXAMPLES = 25  # per operation: enough to reach every parameter's edges, quick enough for CI


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with running(settings_for(tmp_path), app) as node:
        thread = await make_thread(node, people=("alice", "bob"))
        await reply(node, "alice@example.com", thread.addresses["alice"], "Something stored.")
        yield node


def _fuzz(base: str, spec: dict[str, Any]) -> tuple[list[str], dict[str, int]]:
    """Every operation, EXAMPLES cases each; what answered 5xx or not JSON, in words, and
    how many calls each operation got."""
    found: list[str] = []
    calls: dict[str, int] = {}
    for result in schemathesis.openapi.from_dict(spec).get_all_operations():
        if isinstance(result, Err):
            found.append(f"the description has an operation schemathesis cannot read: {result}")
            continue
        _exercise(result.ok(), base, found, calls)
    return found, calls


def _exercise(operation: Any, base: str, found: list[str], calls: dict[str, int]) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        response = case.call(base_url=base, headers={"Host": "127.0.0.1"})
        calls[operation.label] = calls.get(operation.label, 0) + 1
        kind = (response.headers.get("content-type") or [""])[0]  # each header: a list
        if response.status_code >= 500 or (
            response.status_code >= 400 and not kind.startswith("application/json")
        ):
            found.append(f"{case.method} {case.formatted_path}: {response.status_code}")

    check()


async def test_no_generated_request_gets_a_server_error(node: Node) -> None:
    base = f"http://127.0.0.1:{node.http_port}"
    spec = await asyncio.to_thread(
        lambda: json.load(urllib.request.urlopen(f"{base}/openapi.json", timeout=10))
    )
    problems, calls = await asyncio.to_thread(_fuzz, base, spec)
    assert problems == []
    # Every operation in the description was called, most of them many times.
    operations = sum(len(methods) for methods in spec["paths"].values())
    assert len(calls) == operations >= 20, calls
    assert sum(calls.values()) >= 5 * operations, calls
