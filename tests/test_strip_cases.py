"""Regression fixtures from complaints (``mailbot strip-case``): every folder in
tests/strip_cases/ is checked, and the command writes one with no address or name left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailbot.strip.cases import Case, read_case
from mailbot.strip.evaluate import normalise
from mailbot.strip.reply import strip
from mailbot.testing import build_mail
from tests.test_cli import _env, _mailbot

CASES = Path(__file__).parent / "strip_cases"


def _check(case: Case) -> None:
    result = strip(case.text, case.html, case.sender)
    assert normalise(result.reply) == normalise(case.expected), case.name


def test_there_are_cases_to_check() -> None:
    assert [p for p in CASES.iterdir() if (p / "case.json").exists()]


@pytest.mark.parametrize(
    "folder", sorted(p for p in CASES.iterdir() if (p / "case.json").exists()), ids=str
)
def test_each_strip_case_gives_the_reply_it_expects(folder: Path) -> None:
    _check(read_case(folder))


async def test_strip_case_writes_an_anonymised_fixture_the_suite_checks(tmp_path: Path) -> None:
    env = _env(tmp_path)
    await _mailbot(env, "reply-address", "k", "bob.builder@example.com")
    address = (await _mailbot(env, "reply-address", "k", "ann.smith@corp.example")).strip()
    body = (
        "Ann Smith here: the upgrade went fine.\n\nBest regards,\nAnn\n\n"
        "Von: Bob Builder <bob.builder@example.com>\nGesendet: Montag, 7. Dezember 2026 10:00\n"
        "An: Ann Smith <ann.smith@corp.example>\nBetreff: Upgrade\n\nAnn, did it work?\n"
    )
    eml = tmp_path / "reply.eml"
    eml.write_bytes(
        build_mail(
            "Ann Smith <ann.smith@corp.example>",
            address,
            body,
            headers={"Cc": "Bob <bob.builder@example.com>"},
        )
    )
    await _mailbot(env, "replay", str(eml), "--to", address, "--json")
    # The inbox says which rules cut, and where (issue #14).
    listed = await _mailbot(env, "inbox")
    assert "cut: quote header:fields@5" in listed, listed
    expect = tmp_path / "expected.txt"
    expect.write_text("Ann Smith here: the upgrade went fine.\n\nBest regards,\nAnn\n")
    out = tmp_path / "cases"
    said = await _mailbot(env, "strip-case", "1", "--expect", str(expect), "--out", str(out))
    [folder] = list(out.iterdir())
    assert str(folder) in said
    written = "".join(p.read_text(encoding="utf-8") for p in folder.iterdir())
    for private in ("ann", "smith", "bob", "builder", "corp.example", "reply+"):
        assert private not in written.lower(), private
    assert json.loads((folder / "case.json").read_text())["sender"] == "person1@example.com"
    case = read_case(folder)
    assert case.expected.startswith("Person")  # the same placeholder as in the body
    _check(case)
    missing = await _mailbot(env, "strip-case", "999", "--expect", str(expect), ok=False)
    assert missing == ""
