"""The routing table: one table, first match wins, in the order `mailbot bots` shows; a bad
matcher fails when the table is built; the settings file's routes come before the app's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailbot import Bot, InboundMail, Mailbot
from mailbot.app import configure
from mailbot.cli.describing import describe
from mailbot.config import BotConfig
from mailbot.routing import Matcher, Router
from mailbot.testing import Harness, InboundStatus, build_mail, settings_for


class Named(Bot):
    name = "named"
    sender_policy = "open"

    async def process(self, mail: InboundMail) -> None:
        self.ctx.outcome["by"] = self.name


class Helpdesk(Named):
    name = "helpdesk"


class Sales(Named):
    name = "sales"


class Anything(Named):
    name = "anything"


TABLE: list[tuple[Matcher, type[Bot]]] = [
    ("support@example.org", Sales),  # a whole address: only that domain's support@
    ("support", Helpdesk),  # a local part: support@ of every domain of ours
    (re.compile(r"^(help|aide)-"), Helpdesk),
    (lambda address: address.endswith("@example.org"), Anything),
]


@pytest.mark.parametrize(
    ("address", "bot"),
    [
        ("support@example.org", Sales),  # before the local-part route below it
        ("SUPPORT@Example.ORG", Sales),  # case does not matter
        ("support@example.com", Helpdesk),
        ("help-printers@example.org", Helpdesk),  # the pattern, before the catch-all
        ("aide-x@example.com", Helpdesk),
        ("someone@example.org", Anything),
        ("someone@example.com", None),
    ],
)
def test_the_first_matching_route_wins_in_table_order(address: str, bot: type[Bot] | None) -> None:
    assert Router(TABLE).route(address) is bot


def test_reversed_the_same_table_answers_otherwise() -> None:
    assert Router(list(reversed(TABLE))).route("support@example.org") is Anything


def test_a_bad_route_fails_when_the_table_is_built() -> None:
    with pytest.raises(TypeError, match="route matcher"):
        Router([(42, Helpdesk)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="Bot subclass"):
        Router([("support", object)])  # type: ignore[list-item]


def test_mailbot_bots_shows_the_routes_in_the_order_they_are_tried(tmp_path: Path) -> None:
    app = Mailbot(routes=TABLE)
    routes = {item["name"]: item["routes"] for item in describe(app)}
    assert routes["sales"] == ["support@example.org"]
    assert routes["helpdesk"] == ["support@", "/^(help|aide)-/"]
    # The settings file's routes go first: `sales@` of the table now reaches Sales before
    # the catch-all, and `support` does too, ahead of the app's own support@ route.
    table = {"sales": BotConfig(addresses=["support", "sales"])}
    configured = configure(app, settings_for(tmp_path, bots=table))
    assert configured.router.route("support@example.com") is Sales
    assert configured.router.route("sales@example.org") is Sales
    assert configured.router.route("help-x@example.org") is Helpdesk


async def test_mail_goes_to_the_first_matching_route_through_the_pipeline(
    tmp_path: Path,
) -> None:
    app = Mailbot(routes=[("support", Helpdesk), (re.compile("^supp"), Sales)])
    async with Harness(app, tmp_path) as h:
        first = await h.receive(build_mail("ann@example.net", "support@localhost", "hi"))
        second = await h.receive(build_mail("ann@example.net", "supplies@localhost", "hi"))
        nobody = await h.receive(build_mail("ann@example.net", "nobody@localhost", "hi"))
    assert (first.bot, second.bot) == ("helpdesk", "sales")
    assert first.status is second.status is InboundStatus.delivered
    assert nobody.status is InboundStatus.rejected and nobody.bot is None
