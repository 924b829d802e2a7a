"""A deployment's bots and routes, in one object that ``mailbot serve --app`` loads.

>>> from mailbot.bots.comments import CommentsBot
>>> app = Mailbot(bots=[CommentsBot])
>>> app.bot("comments") is CommentsBot
True
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable

from mailbot.bot import Bot
from mailbot.errors import ConfigError
from mailbot.routing import Matcher, Router


class Mailbot:
    def __init__(
        self,
        bots: Iterable[type[Bot]] = (),
        routes: Iterable[tuple[Matcher, type[Bot]]] = (),
        default_bot: str | None = None,
    ) -> None:
        self.router = Router(routes)
        self.bots: dict[str, type[Bot]] = {}
        for bot in [*bots, *(route.bot for route in self.router.routes)]:
            known = self.bots.setdefault(bot.name, bot)
            if known is not bot:
                raise ConfigError(f"two bots are named {bot.name!r}: {known!r} and {bot!r}")
        if not self.bots:
            raise ConfigError("a Mailbot needs at least one bot")
        self.default_bot = default_bot or next(iter(self.bots))
        self.bot(self.default_bot)

    def bot(self, name: str) -> type[Bot]:
        try:
            return self.bots[name]
        except KeyError:
            raise ConfigError(f"no bot named {name!r}; known: {sorted(self.bots)}") from None


def load_app(spec: str) -> Mailbot:
    """``package.module:attribute`` → the Mailbot it names, with a clear error otherwise;
    modules are looked for in the current directory too."""
    module_name, _, attr = spec.partition(":")
    # As uvicorn does: the app in the directory you stand in is found without PYTHONPATH.
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for --app {spec!r}: {exc}") from exc
    app = getattr(module, attr or "app", None)
    if not isinstance(app, Mailbot):
        raise ConfigError(f"--app {spec!r} does not name a mailbot.Mailbot")
    return app
