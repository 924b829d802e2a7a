"""The public surface bot authors import from `mailbot`, and the project's own checks."""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mailbot

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_public_names_are_sorted_and_importable() -> None:
    assert mailbot.__all__ == sorted(mailbot.__all__)
    for name in mailbot.__all__:
        assert getattr(mailbot, name) is not None


def test_what_a_bot_author_needs_is_exported() -> None:
    needed = {"Bot", "InboundMail", "Context", "Mailbot", "Router", "Bounce", "Rejection"}
    assert needed <= set(mailbot.__all__)


def test_the_public_names_are_the_lazy_map_and_each_lives_in_a_public_module() -> None:
    assert mailbot.__all__ == sorted(mailbot._HOMES)
    for name, home in mailbot._HOMES.items():
        assert not any(part.startswith("_") for part in home.split(".")), (name, home)
        assert getattr(mailbot, name) is getattr(importlib.import_module(home), name), name


def _type_checking_imports(source: str) -> dict[str, str]:
    """Each name the ``if TYPE_CHECKING:`` block of ``source`` imports, with its module."""
    found: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.module, statement
                found.update((alias.name, statement.module) for alias in statement.names)
    return found


def test_mypy_sees_every_public_name_where_it_loads_from() -> None:
    # A name missing from the TYPE_CHECKING block still works at runtime, but is Any to mypy.
    source = (ROOT / "mailbot" / "__init__.py").read_text(encoding="utf-8")
    assert _type_checking_imports(source) == mailbot._HOMES
    assert _type_checking_imports("if TYPE_CHECKING:\n    from mailbot.bot import Bot\n") == {
        "Bot": "mailbot.bot"
    }


def _is_mailbot(module: str) -> bool:
    return module == "mailbot" or module.startswith("mailbot.")


def _past_the_public_face(source: str, test_helper: bool = False) -> list[str]:
    """The imports in ``source`` of anything but ``from mailbot import <public name>`` (or
    ``import mailbot``) and the shipped bots (``mailbot.bots.*``: a deployment combines
    them), each with its line; a test helper may also use ``mailbot.testing``."""
    allowed = {"mailbot", "mailbot.testing"} if test_helper else {"mailbot"}
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):  # top-level await parses: the check is later
        if isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: import {alias.name}"
                for alias in node.names
                if _is_mailbot(alias.name) and alias.name not in allowed and not _a_bot(alias.name)
            ]
        elif isinstance(node, ast.ImportFrom) and not node.level and _is_mailbot(node.module or ""):
            names = [alias.name for alias in node.names]
            if node.module == "mailbot":
                names = [name for name in names if name not in mailbot.__all__]
            elif node.module in allowed or _a_bot(node.module or ""):
                names = []
            if names:
                found.append(f"line {node.lineno}: from {node.module} import {', '.join(names)}")
    return found


def _a_bot(module: str) -> bool:
    return module.startswith("mailbot.bots.")


def _test_helper(path: Path) -> bool:
    return path.name == "conftest.py" or path.name.startswith("test_")


def test_the_bots_import_mailbot_only_through_its_public_face() -> None:
    found = {
        path.name: offences
        for path in sorted((ROOT / "mailbot" / "bots").glob("*.py"))
        if (offences := _past_the_public_face(path.read_text(encoding="utf-8"), _test_helper(path)))
    }
    assert found == {}


def test_an_import_past_the_public_face_is_seen() -> None:
    source = """
import mailbot
import mailbot.store.conversations
from mailbot import Bot, store
from mailbot.store.conversations import title
from mailbot.testing import Harness
from mailbot.bots.comments import CommentsBot
from . import default
def later():
    from mailbot.parse import parse
"""
    assert _past_the_public_face(source) == [
        "line 3: import mailbot.store.conversations",
        "line 4: from mailbot import store",
        "line 5: from mailbot.store.conversations import title",
        "line 6: from mailbot.testing import Harness",
        "line 10: from mailbot.parse import parse",
    ]
    assert "line 6: from mailbot.testing import Harness" not in _past_the_public_face(
        source, test_helper=True
    )


def test_the_readme_examples_import_only_public_names() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "the README has python examples"
    found = {
        number: offences
        for number, block in enumerate(blocks)
        if (offences := _past_the_public_face(block, test_helper=True))
    }
    assert found == {}


def test_the_testing_helpers_the_readme_names_are_exported() -> None:
    import mailbot.testing

    text = README.read_text(encoding="utf-8")
    paragraph = text.split("`mailbot.testing` ships", 1)[1].split("```python", 1)[0]
    named = set(re.findall(r"`(\w+)`", paragraph))
    assert {"Harness", "RecordingTransport", "build_mail"} <= named
    assert sorted(named - set(mailbot.testing.__all__)) == []


def test_ruff_finds_nothing() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert ruff, "ruff is a dev dependency"
    result = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
