"""Bots found in ``bots/`` and in installed packages, and the ``[bots.<name>]`` tables that
say which run, on which addresses, with which settings (mailbot/app.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbot import Mailbot
from mailbot.app import configure
from mailbot.bots.comments import CommentsBot
from mailbot.bots.inspector import InspectorBot
from mailbot.config import BotConfig
from mailbot.errors import ConfigError
from mailbot.testing import Harness, InboundStatus, build_mail, settings_for

PLUGIN = "mailbot_test_plugin_bot"
PLUGIN_SOURCE = """
from mailbot import Bot, InboundMail


class PluginBot(Bot):
    name = "plugin"
    sender_policy = "open"
    addresses = ("plugin-default",)

    async def process(self, mail: InboundMail) -> None:
        self.ctx.outcome["plugin"] = {"settings": self.ctx.bot_settings, "said": mail.reply}
"""

FOLDER_BOT = """
from pydantic import BaseModel

from mailbot import Bot, InboundMail


class Greeting(BaseModel):
    greeting: str = "hello"
    times: int = 1


class GreeterBot(Bot):
    name = "greeter"
    sender_policy = "open"
    settings_model = Greeting

    async def process(self, mail: InboundMail) -> None:
        self.ctx.outcome["greeter"] = self.ctx.bot_settings
"""


def _wheel(folder: Path) -> Path:
    """A real wheel of one module with a ``mailbot.bots`` entry point, as a package of
    someone's bot would be built."""
    dist_info = "mailbot_test_plugin_bot-1.0.dist-info"
    files = {
        f"{PLUGIN}.py": PLUGIN_SOURCE.encode(),
        f"{dist_info}/METADATA": (
            b"Metadata-Version: 2.1\nName: mailbot-test-plugin-bot\nVersion: 1.0\n"
        ),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        f"{dist_info}/entry_points.txt": f"[mailbot.bots]\nplugin = {PLUGIN}:PluginBot\n".encode(),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / "mailbot_test_plugin_bot-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin's wheel installed by pip into a directory of its own: a real install with
    its .dist-info, that leaves the test venv (shared by the other tests running at the
    same time) as it was. A process sees it with that directory on its path."""
    folder = tmp_path_factory.mktemp("plugin")
    target = folder / "site"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"),
            *("--disable-pip-version-check", "--target", str(target), str(_wheel(folder))),
        ],
        check=True,
        capture_output=True,
    )
    assert (target / "mailbot_test_plugin_bot-1.0.dist-info" / "entry_points.txt").is_file()
    return target


@pytest.fixture
def on_path(installed: Path) -> Iterator[None]:
    sys.path.insert(0, str(installed))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(installed))
        sys.modules.pop(PLUGIN, None)
        importlib.invalidate_caches()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(MAILBOT_CONFIG="", MAILBOT_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    env.update(extra)
    return env


async def _bots_json(cwd: Path, env: dict[str, str]) -> list[dict[str, object]]:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "mailbot", "bots", "--json"),
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return [json.loads(line) for line in out.decode().splitlines()]


async def test_mailbot_bots_lists_a_bot_installed_as_a_package(
    installed: Path, tmp_path: Path
) -> None:
    env = _env(tmp_path, PYTHONPATH=str(installed))
    listed = {b["name"]: b for b in await _bots_json(tmp_path, env)}
    assert listed["plugin"]["source"] == "entry point plugin (mailbot-test-plugin-bot 1.0)"
    assert listed["plugin"]["routes"] == ["plugin-default@"]  # the class's own addresses
    assert listed["comments"]["source"] == "app" and listed["comments"]["default"]
    # Without the package on the path, it is not there.
    assert "plugin" not in {b["name"] for b in await _bots_json(tmp_path, _env(tmp_path))}


async def test_an_installed_bot_gets_mail_on_the_addresses_and_settings_of_its_table(
    on_path: None, tmp_path: Path
) -> None:
    table = {"plugin": {"addresses": ["desk"], "settings": {"team": "blue"}}}
    async with Harness(Mailbot(bots=[CommentsBot]), tmp_path, bots=table) as h:
        assert h.app.sources["plugin"].startswith("entry point plugin")
        row = await h.receive(build_mail("ann@example.org", "desk@localhost", "hi there"))
        # The class's own address gave way to the table's.
        other = await h.receive(build_mail("ann@example.org", "plugin-default@localhost", "x"))
    assert row.status is InboundStatus.delivered, row.reason
    assert (row.outcome or {})["plugin"] == {"settings": {"team": "blue"}, "said": "hi there"}
    assert other.status is InboundStatus.rejected


async def test_a_bot_in_the_bots_folder_runs_with_its_checked_settings(tmp_path: Path) -> None:
    folder = tmp_path / "bots"
    folder.mkdir()
    (folder / "greeter.py").write_text(FOLDER_BOT)
    (folder / "_helpers.py").write_text("raise RuntimeError('never imported')\n")
    table = {"greeter": {"addresses": ["hello", "/^hi-/"], "settings": {"times": 3}}}
    async with Harness(Mailbot(bots=[CommentsBot]), tmp_path, bots_dir=folder, bots=table) as h:
        assert h.app.sources["greeter"] == "bots/greeter.py"
        exact = await h.receive(build_mail("ann@example.org", "hello@localhost", "x"))
        pattern = await h.receive(build_mail("ann@example.org", "hi-there@localhost", "x"))
    for row in (exact, pattern):
        assert row.status is InboundStatus.delivered, row.reason
        assert (row.outcome or {})["greeter"] == {"greeting": "hello", "times": 3}

    bad = {"greeter": BotConfig(settings={"times": "many"})}
    with pytest.raises(ConfigError, match=r"\[bots.greeter\] settings: times"):
        configure(Mailbot(bots=[CommentsBot]), settings_for(tmp_path, bots_dir=folder, bots=bad))


async def test_mailbot_bots_reads_the_bots_folder_and_the_settings_file(tmp_path: Path) -> None:
    (tmp_path / "bots").mkdir()
    (tmp_path / "bots" / "greeter.py").write_text(FOLDER_BOT)
    (tmp_path / "mailbot.toml").write_text(
        '[bots.greeter]\naddresses = ["hello"]\n\n[bots.inspector]\nenabled = false\n'
    )
    env = _env(tmp_path)
    del env["MAILBOT_CONFIG"]  # ./mailbot.toml, as serve reads it
    listed = await _bots_json(tmp_path, env)
    assert [(b["name"], b["enabled"], b["source"]) for b in listed] == [
        ("comments", True, "app"),
        ("greeter", True, "bots/greeter.py"),
        ("inspector", False, "app"),  # off: listed last
    ]
    by_name = {b["name"]: b for b in listed}
    assert by_name["greeter"]["routes"] == ["hello@"]
    assert by_name["greeter"]["settings"] == {"greeting": "hello", "times": 1}


def test_the_settings_turn_a_bot_off_with_its_subdomain_and_name_only_known_bots(
    tmp_path: Path,
) -> None:
    app = Mailbot(bots=[CommentsBot, InspectorBot])
    off = configure(app, settings_for(tmp_path, bots={"inspector": BotConfig(enabled=False)}))
    assert list(off.bots) == ["comments"] and off.disabled == {"inspector": "app"}
    with pytest.raises(ConfigError, match=r"\[bots.tickets\]: no bot is named 'tickets'"):
        configure(app, settings_for(tmp_path, bots={"tickets": BotConfig()}))
    with pytest.raises(ConfigError, match="bad route"):
        configure(app, settings_for(tmp_path, bots={"comments": BotConfig(addresses=["a b"])}))
    with pytest.raises(ConfigError, match="every bot off"):
        everything = {name: BotConfig(enabled=False) for name in ("comments", "inspector")}
        configure(app, settings_for(tmp_path, bots=everything))


async def test_mail_to_a_conversation_of_a_bot_turned_off_is_refused_with_why(
    tmp_path: Path,
) -> None:
    app = Mailbot(bots=[CommentsBot, InspectorBot])
    off = {"comments": BotConfig(enabled=False)}
    async with Harness(app, tmp_path, bots=off) as h:
        thread = await h.thread(people=("ann",), bot="comments")
        row = await h.receive(build_mail("ann@example.com", thread.addresses["ann"], "hi"))
    assert row.status is InboundStatus.rejected and row.attempts <= 1
    assert row.reason == "the bot 'comments' of this conversation does not run here"


def test_an_installed_bot_turned_off_is_not_even_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A package whose bot breaks on import: the operator turns it off and mailbot runs.
    site = tmp_path / "site"
    (site / "broken_bot-1.0.dist-info").mkdir(parents=True)
    (site / "broken_bot-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-bot\nVersion: 1.0\n"
    )
    (site / "broken_bot-1.0.dist-info" / "entry_points.txt").write_text(
        "[mailbot.bots]\nbroken = mailbot_broken_bot:Broken\n"
    )
    (site / "mailbot_broken_bot.py").write_text("raise RuntimeError('needs a licence server')\n")
    monkeypatch.syspath_prepend(str(site))
    app = Mailbot(bots=[CommentsBot])
    with pytest.raises(ConfigError, match="entry point broken .* fails to load: RuntimeError"):
        configure(app, settings_for(tmp_path))
    off = configure(app, settings_for(tmp_path, bots={"broken": BotConfig(enabled=False)}))
    assert list(off.bots) == ["comments"]
    assert off.disabled == {"broken": "entry point broken (broken-bot 1.0), not loaded"}
    assert "mailbot_broken_bot" not in sys.modules
