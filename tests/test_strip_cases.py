"""Regression fixtures from complaints (``mailbot strip-case``): every folder in
tests/strip_cases/ is checked, and the command writes one with no address or name left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailbot.bots.default import app
from mailbot.parse import parse
from mailbot.serve import running
from mailbot.store import tokens
from mailbot.strip.cases import Case, make_case, read_case
from mailbot.strip.evaluate import normalise
from mailbot.strip.reply import strip
from mailbot.testing import build_mail, reply, settings_for
from tests.sinks import ScriptedSink
from tests.test_cli import _env, _mailbot
from tests.test_strip_clients import COMMENT, OWN, STYLES, notify_bob

CASES = Path(__file__).parent / "strip_cases"


def _check(case: Case) -> None:
    result = strip(case.text, case.html, case.sender, case.sent)
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


async def test_a_reply_cut_against_what_we_sent_keeps_that_text_in_its_fixture(
    tmp_path: Path,
) -> None:
    # Bob answers a real notification with a header line no rule knows: only the sent text
    # cuts it. The fixture carries that text, anonymised, and cuts the same way.
    async with ScriptedSink() as sink:
        settings = settings_for(tmp_path, sink.url)
        async with running(settings, app, http=False) as node:
            thread, _, text = await notify_bob(node, sink)
            answer = STYLES["unsupported language"](text.rstrip("\n"))
            row = await reply(node, "bob@example.com", thread.addresses["bob"], answer)
    assert row.reply_text == OWN
    expect = tmp_path / "expected.txt"
    expect.write_text(OWN + "\n")
    env = _env(tmp_path, MAILBOT_DATABASE_URL=settings.database_url)
    out = tmp_path / "cases"
    await _mailbot(env, "strip-case", str(row.id), "--expect", str(expect), "--out", str(out))
    [folder] = list(out.iterdir())
    assert (folder / "sent-1.txt").is_file()
    written = "".join(p.read_text(encoding="utf-8") for p in folder.iterdir())
    for private in ("alice", "bob", "reply+"):
        assert private not in written.lower(), private
    case = read_case(folder)
    assert len(case.sent) == 1 and COMMENT in " ".join(case.sent[0].split())
    _check(case)
    # Without the sent text the rules keep the unknown header line: the text is what cuts.
    assert strip(case.text, case.html, case.sender).reply != case.expected.strip()


def test_an_address_on_an_undotted_domain_is_hidden_too() -> None:
    token = tokens.mint_token()
    body = f"Done.\n\nOn Mon, Bot <reply+{token}@localhost> wrote:\n> mail admin@mailhost\n"
    mail = parse(build_mail("ann@example.org", f"reply+{token}@localhost", body))
    case = make_case(mail, "Done.\n", "undotted")
    written = f"{case.text} {case.html} {case.sender} {case.expected}"
    assert token not in written and "admin@mailhost" not in written
    assert "@example.com" in (case.text or "")
