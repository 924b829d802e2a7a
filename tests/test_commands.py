"""Commands in mail, read and declared (mailbot/commands/find.py and declare.py)."""

from __future__ import annotations

import pytest

from mailbot import Bot, InboundMail, Participant, command
from mailbot.commands.declare import CommandError, read_args
from mailbot.commands.find import commands_atop, in_command_mail, in_reply

KNOWN = {"close", "label", "assign", "help", "confirm", "subscribe", "status"}


def test_known_command_lines_are_lifted_out_of_the_reply_and_the_rest_kept() -> None:
    found = in_reply(
        "Fixed in main.\n\n/close\n/label bug, urgent\n\nThanks for the report!", KNOWN
    )
    assert [(c.name, c.args) for c in found.commands] == [("close", ""), ("label", "bug, urgent")]
    assert found.text == "Fixed in main.\n\nThanks for the report!"


def test_a_reply_of_commands_alone_leaves_no_text() -> None:
    found = in_reply("/close\n\n/Label wontfix  \n", KNOWN)
    assert [c.name for c in found.commands] == ["close", "label"]
    assert found.text == ""


def test_an_unknown_command_is_reported_but_stays_in_the_text() -> None:
    found = in_reply("I tried it.\n/shrug\nstill broken", KNOWN)
    assert [c.name for c in found.commands] == ["shrug"]
    assert found.text == "I tried it.\n/shrug\nstill broken"


def test_paths_code_and_mid_line_slashes_are_not_commands() -> None:
    text = (
        "See /usr/bin/env and and/or this:\n"
        "```\n/close\n```\n"
        "    /close   (indented: code)\n"
        "run it with /close at the end of a line\n"
    )
    assert in_reply(text, KNOWN).commands == ()
    assert in_reply(text, KNOWN).text == text


def test_a_command_mail_is_read_from_the_top_until_thanks() -> None:
    found = in_command_mail("\nsubscribe\n/status 42\n\nthanks.\nclose 9\n-- \nJo\n", KNOWN)
    assert [(c.name, c.args) for c in found.commands] == [("subscribe", ""), ("status", "42")]
    assert found.text.startswith("thanks.")


def test_a_command_mail_stops_at_the_first_line_that_is_no_command() -> None:
    found = in_command_mail("status 1\nHello, can you close my bug?\nclose 2\n", KNOWN)
    assert [c.name for c in found.commands] == ["status", "hello,"]
    assert found.text == "close 2"


def test_a_signature_separator_ends_a_command_mail() -> None:
    assert [c.name for c in in_command_mail("help\n--\nclose 1", KNOWN).commands] == ["help"]


class Desk(Bot):
    name = "desk-declare"

    async def process(self, mail: InboundMail) -> None:
        return None

    @command(help="set the priority")
    async def priority(self, mail: InboundMail, level: int, why: str = "") -> str:
        return f"{level} {why}"

    @command(help="label it", who="verified")
    async def label(self, mail: InboundMail, labels: list[str]) -> None:
        return None

    @command(help="hand it over", who="maintainer")
    async def assign(self, mail: InboundMail, to: Participant, note: str | None = None) -> None:
        return None

    @command("re_open", help="open it again")
    async def reopen(self, mail: InboundMail) -> None:
        return None


def _people() -> list[Participant]:
    return [
        Participant(id=1, email="bob@example.com", name="Bob Stone"),
        Participant(id=2, email="bob@other.example", name="Bobby"),
        Participant(id=3, email="carol@example.com", name="Carol"),
    ]


def test_a_bot_declares_its_commands_with_their_usage() -> None:
    assert sorted(Desk.commands) == ["assign", "label", "priority", "re-open"]
    assert Desk.commands["priority"].usage == "/priority LEVEL [WHY]"
    assert Desk.commands["assign"].usage == "/assign @someone [NOTE]"
    assert Desk.commands["label"].who == "verified"


def test_arguments_are_read_by_their_type() -> None:
    people = _people()
    assert read_args(Desk.commands["priority"], "2 it is on  fire", people) == [2, "it is on fire"]
    assert read_args(Desk.commands["priority"], "3", people) == [3, ""]
    assert read_args(Desk.commands["label"], "bug, urgent  ui", people) == [["bug", "urgent", "ui"]]
    [carol, note] = read_args(Desk.commands["assign"], "@Carol", people)
    assert (carol.id, note) == (3, None)
    [bob, _] = read_args(Desk.commands["assign"], "bob@other.example", people)
    assert bob.id == 2


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("priority", "high", "must be a number"),
        ("priority", "", "LEVEL is missing"),
        ("label", "", "LABELS is missing"),
        ("assign", "@bob", "several participants"),  # bob@example.com and bob@other.example
        ("assign", "@zed", "no participant"),
        ("re-open", "now please", "too much"),
    ],
)
def test_malformed_arguments_are_refused_with_why(name: str, text: str, said: str) -> None:
    with pytest.raises(CommandError, match=said):
        read_args(Desk.commands[name], text, _people())


def test_a_command_of_a_type_not_read_is_refused_when_the_class_is_made() -> None:
    with pytest.raises(TypeError, match="when"):

        class Bad(Bot):
            name = "bad"

            @command()
            async def when(self, mail: InboundMail, at: float) -> None:
                return None


def test_builtin_and_malformed_names_cannot_be_declared() -> None:
    for name in ("help", "confirm", "Not A Name", "9lives"):
        with pytest.raises(TypeError):
            command(name)(lambda self, mail: None)


def test_known_commands_taken_for_a_signature_are_still_commands() -> None:
    assert commands_atop("/label bug\n\n/priority 1\nJo", KNOWN) == "/label bug"
    assert commands_atop("/John", KNOWN) == ""  # a sign-off, not a command
    assert commands_atop("--\n/close", KNOWN) == ""  # below "-- ": the signature's own
    assert commands_atop(None, KNOWN) == ""
