"""The README's promises, run as written: the bot example and the five-minute tour."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
import types
from pathlib import Path

import pytest

from mailbot import Mailbot
from mailbot.serve import running
from mailbot.store import conversations
from mailbot.store.models import InboundStatus
from mailbot.testing import (
    SmtpSink,
    make_thread,
    reply,
    settings_for,
)
from tests.test_cli import _free_port

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def _need_swaks() -> None:
    if shutil.which("swaks") is None:
        if os.environ.get("CI"):
            raise AssertionError("swaks is missing: .ci/run installs it")
        pytest.skip("swaks is not installed (Debian package swaks)")


def _shell_env() -> tuple[int, dict[str, str]]:
    """A free SMTP port, and the environment a README shell block runs in: mailbot on PATH,
    free ports, no real DNS, no MAILBOT_* of the machine's."""
    smtp_port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(
        MAILBOT_SMTP_PORT=str(smtp_port),
        MAILBOT_HTTP_PORT=str(_free_port()),
        MAILBOT_CPU_WORKERS="0",
        MAILBOT_DNS="offline",
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
    )
    return smtp_port, env


async def _beside_a_server(command: str, script: str, cwd: Path, env: dict[str, str]) -> str:
    """Start ``command`` (a mailbot serve) in its own session, run the shell ``script`` once it
    listens, stop it with Ctrl-C; what the script printed (it must succeed)."""
    server = await asyncio.create_subprocess_shell(
        command, cwd=cwd, env=env, start_new_session=True,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert server.stderr is not None
        async with asyncio.timeout(60):
            while b"HTTP listening" not in await server.stderr.readline():
                pass
        run = await asyncio.create_subprocess_exec(
            "bash", "-euo", "pipefail", "-c", script, cwd=cwd, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out = (await run.communicate())[0].decode()
        assert run.returncode == 0, out
        return out
    finally:
        os.killpg(server.pid, signal.SIGINT)
        await server.wait()


async def test_the_bot_example_runs(tmp_path: Path, sink: SmtpSink) -> None:
    [source] = [b for b in _blocks("python") if "class ShoutBot" in b]
    module = types.ModuleType("readme_example")
    exec(compile(source, "README.md", "exec"), module.__dict__)  # noqa: S102 - our own README
    app = module.app
    assert isinstance(app, Mailbot)
    async with running(settings_for(tmp_path, sink), app, http=False) as node:
        thread = await make_thread(node, people=("ann",), bot="shout")
        row = await reply(node, "ann@example.com", thread.addresses["ann"], "quiet please")
        assert (row.status, row.bot) == (InboundStatus.delivered, "shout")
        [mail] = await sink.wait_for(1)
        assert "QUIET PLEASE" in mail.text


async def test_the_commands_example_runs_over_smtp(tmp_path: Path, sink: SmtpSink) -> None:
    [source] = [b for b in _blocks("python") if "class TicketBot" in b]
    module = types.ModuleType("readme_commands")
    exec(compile(source, "README.md", "exec"), module.__dict__)  # noqa: S102 - our own README
    app = Mailbot(bots=[module.TicketBot])
    async with running(settings_for(tmp_path, sink), app, http=False) as node:
        thread = await make_thread(node, people=("ann", "bo"), bot="tickets")
        body = "Seen on two machines.\n/priority 2\n/assign @bo\n/delete"
        row = await reply(node, "ann@example.com", thread.addresses["ann"], body)
        assert row.status is InboundStatus.delivered and row.outcome is not None
        assert [c["status"] for c in row.outcome["commands"]] == ["done", "refused", "refused"]
        async with node.sessions() as session:
            convo = await conversations.get(session, thread.conversation.key)
        assert convo is not None and convo.state == {"priority": 2}
        assert [c.body for c in convo.comments] == ["Seen on two machines."]
        [answer] = await sink.wait_for(1)
        text = answer.text.replace("\r\n", "\n")
        assert "/assign @bo\n  refused: only participants with the role 'maintainer'" in text
        assert "/delete\n  refused: only senders whose mail passed DMARC" in text


async def test_the_five_minute_tour_works_as_written(tmp_path: Path) -> None:
    _need_swaks()
    [tour] = [b for b in _blocks("sh") if "swaks" in b and "issue-1" in b]
    smtp_port, env = _shell_env()
    # The tour's own commands; only the port differs, and `sleep 1` waits for the comment.
    script = (
        tour.replace("127.0.0.1:2525", f"127.0.0.1:{smtp_port}")
        .replace('export PATH="$PWD/.venv/bin:$PATH"', "")
        .replace(
            "sleep 1",
            "for i in $(seq 100); do mailbot inbox | grep -q delivered && break; sleep 0.1; done",
        )
    )
    out = await _beside_a_server(f"{sys.executable} -m mailbot serve", script, tmp_path, env)
    assert "your reply address: reply+" in out
    assert "--- you@example.test" in out
    assert "Put it out with the extinguisher by the door." in out
    assert (
        "The printer in room 3 is on fire."
        not in out.split("--- you@example.test")[1].split("\n\n")[0]
    )
    assert re.search(r"delivered\s+you@example.test", out)
    held = re.findall(r"held\s+(\S+)", out)
    assert sorted(held) == ["maintainer@example.test", "you@example.test"]


async def test_the_first_bot_tutorial_works_as_written(tmp_path: Path) -> None:
    _need_swaks()
    [source] = [b for b in _blocks("python") if "class CounterBot" in b]
    (tmp_path / "first_bot.py").write_text(source)
    [serve] = [b for b in _blocks("sh") if "--app first_bot:app" in b and "swaks" not in b]
    [steps] = [b for b in _blocks("sh") if "first_bot:app" in b and "swaks" in b]
    smtp_port, env = _shell_env()
    script = steps.replace("127.0.0.1:2525", f"127.0.0.1:{smtp_port}").replace(
        "sleep 1",
        "for i in $(seq 100); do [ $(mailbot inbox | grep -c delivered) = 2 ] && break; "
        "sleep 0.1; done",
    )
    # The serve block as written, from the directory that holds first_bot.py.
    out = await _beside_a_server(serve.strip(), script, tmp_path, env)
    assert 'state: {"count": 0}' in out
    comments = re.findall(r"^--- (\S+) at .*\n(.*)$", out, flags=re.M)
    assert comments == [("you@example.test", "First!")]
    held = re.findall(r"held\s+(\S+)\s+(.*)", out)
    assert [who for who, _ in held] == ["you@example.test", "you@example.test"], out
