"""Which bot gets a mail: one table, first match wins.

Reply addresses (``reply+<token>@``) need no entry: a token belongs to a conversation, and
the conversation names its bot. The table is for the other addresses a deployment answers
(``support@``, ``tickets@``); every address in it is also what the SMTP server accepts at RCPT.

>>> from mailbot.bot import Bot
>>> class Helpdesk(Bot):
...     name = "helpdesk"
>>> router = Router([("support", Helpdesk), (re.compile(r"^help-"), Helpdesk)])
>>> router.route("Support@example.org") is Helpdesk, router.route("nobody@example.org")
(True, None)

A matcher is a local part (``"support"``), a whole address (``"support@example.org"``), a
compiled regular expression searched in the address, or a callable taking the address. A
matcher of any other type fails when the table is built, not when mail arrives.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mailbot.addresses import split
from mailbot.bot import Bot

Matcher = str | re.Pattern[str] | Callable[[str], bool]


@dataclass(frozen=True)
class Route:
    matcher: Matcher
    bot: type[Bot]

    def matches(self, address: str) -> bool:
        address = address.lower()
        if isinstance(self.matcher, str):
            wanted = self.matcher.lower()
            return address == wanted if "@" in wanted else split(address)[0] == wanted
        if isinstance(self.matcher, re.Pattern):
            return self.matcher.search(address) is not None
        return bool(self.matcher(address))


class Router:
    def __init__(self, routes: Iterable[tuple[Matcher, type[Bot]]] = ()) -> None:
        self.routes: list[Route] = []
        for matcher, bot in routes:
            if not isinstance(matcher, (str, re.Pattern)) and not callable(matcher):
                raise TypeError(f"route matcher must be str, re.Pattern or callable: {matcher!r}")
            if not (isinstance(bot, type) and issubclass(bot, Bot)):
                raise TypeError(f"route target must be a Bot subclass: {bot!r}")
            self.routes.append(Route(matcher, bot))

    def route(self, address: str) -> type[Bot] | None:
        for route in self.routes:
            if route.matches(address):
                return route.bot
        return None
