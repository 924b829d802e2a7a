"""A deployment's bots and routes, in one object that ``mailbot serve --app`` loads.

>>> from mailbot.bots.comments import CommentsBot
>>> app = Mailbot(bots=[CommentsBot])
>>> app.bot("comments") is CommentsBot
True

Which bots a deployment runs (:func:`configure`): the app's, the ones in ``bots/``, the
ones installed as packages, each enabled, routed and set up as the settings file says.

Three places a bot comes from, in this order (a name may appear once):

1. the app ``--app`` names (``mailbot.bots.default:app`` when none is given);
2. every ``*.py`` file of ``bots_dir`` (``./bots`` when there is one): each :class:`Bot`
   subclass the file defines;
3. every entry point of the group ``mailbot.bots`` of the installed packages, each naming a
   :class:`Bot` subclass (``myhelpdesk = "myhelpdesk.bot:Helpdesk"`` in the package's
   ``[project.entry-points."mailbot.bots"]``).

Then one ``[bots.<name>]`` table a bot::

    [bots.tickets]
    addresses = ["support", "/^help-/"]   # routed to it, before the app's own routes
    settings = { sla_hours = 8 }          # what the bot reads as self.ctx.bot_settings

    [bots.inspector]
    enabled = false                       # not run: its routes and subdomain go with it

A bot found in ``bots/`` or a package is enabled unless its table says otherwise; its
routes are its class's ``addresses`` unless the table gives others. A bot that declares
``settings_model`` (a pydantic model) has its table's settings checked against it at start:
a typo is a start-up error, not a surprise in the first mail.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mailbot.bot import Bot
from mailbot.errors import ConfigError
from mailbot.routing import Matcher, Router

if TYPE_CHECKING:
    from mailbot.config import Settings


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
        # Filled by configure(): where each bot came from, the bots the
        # settings turned off, and each bot's own settings (its ``[bots.<name>]`` table).
        self.sources: dict[str, str] = dict.fromkeys(self.bots, "app")
        self.disabled: dict[str, str] = {}
        self.bot_settings: dict[str, dict[str, Any]] = {}

    def bot(self, name: str) -> type[Bot]:
        try:
            return self.bots[name]
        except KeyError:
            raise ConfigError(f"no bot named {name!r}; known: {sorted(self.bots)}") from None


def load_app(spec: str, settings: Settings | None = None) -> Mailbot:
    """``package.module:attribute`` → the Mailbot it names, with a clear error otherwise;
    modules are looked for in the current directory too. With ``settings``: the deployment
    they describe, the bots of ``bots/`` and of installed packages added and each bot's
    ``[bots.<name>]`` table applied (:func:`configure`)."""
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
    if settings is None:
        return app
    return configure(app, settings)


GROUP = "mailbot.bots"
FOLDER_PACKAGE = "mailbot_bots_folder"  # the name the folder's modules are imported under


@dataclass(frozen=True)
class Found:
    bot: type[Bot]
    source: str  # "app", "bots/helpdesk.py", "entry point helpdesk (myhelpdesk 1.0)"


def from_folder(folder: Path) -> list[Found]:
    """The Bot classes each ``*.py`` file of ``folder`` defines (``_``-files are helpers)."""
    found = []
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        module = _import_file(path)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, Bot) and value.__module__ == module.__name__:
                found.append(Found(value, f"{folder.name}/{path.name}"))
    return found


def _import_file(path: Path) -> ModuleType:
    name = f"{FOLDER_PACKAGE}.{path.stem}"
    if name in sys.modules:  # loaded once a process: two loads would make two classes
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load the bot file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(
            f"the bot file {path} fails to load: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def from_packages(off: frozenset[str] = frozenset()) -> tuple[list[Found], dict[str, str]]:
    """The bots installed packages offer under the entry point group ``mailbot.bots``, and
    those not even imported because the settings turn their entry point's name off (a
    broken or unwanted package is left alone): name → where it is."""
    found, unloaded = [], {}
    for point in entry_points(group=GROUP):
        dist = f" ({point.dist.name} {point.dist.version})" if point.dist else ""
        where = f"entry point {point.name}{dist}"
        if point.name in off:
            unloaded[point.name] = f"{where}, not loaded"
            continue
        try:
            value = point.load()
        except Exception as exc:
            raise ConfigError(f"{where} fails to load: {type(exc).__name__}: {exc}") from exc
        if not (isinstance(value, type) and issubclass(value, Bot)):
            raise ConfigError(f"{where} names {point.value!r}, which is not a mailbot Bot class")
        found.append(Found(value, where))
    return found, unloaded


def matcher(text: str) -> Matcher:
    """A route from the settings file: ``/regex/``, else a local part or a whole address."""
    if len(text) > 2 and text.startswith("/") and text.endswith("/"):
        try:
            return re.compile(text[1:-1], re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(f"bad route {text!r}: {exc}") from exc
    if not text.strip() or any(c.isspace() for c in text):
        raise ConfigError(f"bad route {text!r}: an address, a local part or /regex/")
    return text


def configure(app: Mailbot, settings: Settings) -> Mailbot:
    """The deployment: ``app`` with the bots found in ``bots/`` and in packages, those the
    settings turn off left out, the settings' routes first."""
    folder = settings.bots_dir or Path("bots")
    if settings.bots_dir is not None and not folder.is_dir():
        raise ConfigError(f"MAILBOT_BOTS_DIR names {str(folder)!r}, which is not a directory")
    found = [Found(bot, "app") for bot in app.bots.values()]
    found += from_folder(folder) if folder.is_dir() else []
    off = frozenset(n for n in settings.bots if not _config(settings, n).get("enabled", True))
    packaged, unloaded = from_packages(off)
    found += packaged
    known: dict[str, Found] = {}
    for item in found:
        other = known.setdefault(item.bot.name, item)
        if other.bot is not item.bot:
            raise ConfigError(
                f"two bots are named {item.bot.name!r}: from {other.source} and {item.source}"
            )
    for name in settings.bots:
        if name not in known and name not in unloaded:
            raise ConfigError(f"[bots.{name}]: no bot is named {name!r}; found: {sorted(known)}")
    enabled = {n: f for n, f in known.items() if _config(settings, n).get("enabled", True)}
    if not enabled:
        raise ConfigError("the settings turn every bot off")

    routes: list[tuple[Matcher, type[Bot]]] = []
    for name, config in settings.bots.items():  # the operator's word first, in file order
        if name in enabled:
            routes += [(matcher(text), enabled[name].bot) for text in config.addresses]
    routes += [(r.matcher, r.bot) for r in app.router.routes if r.bot.name in enabled]
    for name, item in enabled.items():  # then what bots found elsewhere declare themselves
        configured = name in settings.bots and settings.bots[name].addresses
        if item.source != "app" and not configured:
            routes += [(m, item.bot) for m in item.bot.addresses]
    default = app.default_bot if app.default_bot in enabled else next(iter(enabled))
    configured_app = Mailbot(
        bots=[item.bot for item in enabled.values()], routes=routes, default_bot=default
    )
    configured_app.sources = {name: item.source for name, item in enabled.items()}
    configured_app.disabled = {n: f.source for n, f in known.items() if n not in enabled}
    configured_app.disabled |= {n: w for n, w in unloaded.items() if n not in known}
    configured_app.bot_settings = {
        name: _bot_settings(item.bot, _config(settings, name).get("settings", {}))
        for name, item in enabled.items()
    }
    return configured_app


def _config(settings: Settings, name: str) -> dict[str, Any]:
    config = settings.bots.get(name)
    return config.model_dump() if config is not None else {}


def _bot_settings(bot: type[Bot], given: dict[str, Any]) -> dict[str, Any]:
    if bot.settings_model is None:
        return dict(given)
    try:
        return bot.settings_model.model_validate(given).model_dump()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigError(f"[bots.{bot.name}] settings: {problems}") from None
