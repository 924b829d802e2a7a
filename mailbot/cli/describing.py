"""``mailbot bots``: what a deployment answers, before any mail arrives."""

from __future__ import annotations

import re
from typing import Any

import typer

from mailbot.app import Mailbot, load_app
from mailbot.cli.common import DEFAULT_APP, AppOpt, JsonOpt, print_json, settings_from
from mailbot.routing import Matcher


def bots(app: AppOpt = DEFAULT_APP, as_json: JsonOpt = False) -> None:
    """The deployment's bots (the app's, those in bots/ and those installed as packages, as
    the settings file's [bots.<name>] tables leave them), in routing order: where each came
    from, the addresses routed to it, who may write to it, and its commands (usage, who may
    use them, help). Bots the settings turn off are listed last, as off.

    Example: mailbot bots --app myproject.mail:app
    """
    for item in describe(load_app(app, settings_from())):
        if as_json:
            print_json(item)
            continue
        if not item["enabled"]:
            typer.echo(f"{item['name']}  (off in the settings; from {item['source']})")
            continue
        routes = ", ".join(item["routes"]) or "reply addresses only"
        if item["subdomain"]:
            routes += f", temporary addresses @{item['subdomain']}.<domain>"
        typer.echo(
            f"{item['name']}  (from {item['source']}; senders: {item['sender_policy']}; "
            f"routes: {routes})"
        )
        for cmd in item["commands"]:
            rule = cmd["who"] + (", confirmed" if cmd["confirm"] else "")
            typer.echo(f"  {cmd['usage']:<28} {cmd['help']}  [{rule}]")


def describe(app: Mailbot) -> list[dict[str, Any]]:
    routed: dict[str, list[str]] = {}
    for route in app.router.routes:  # the table's order: first match wins
        routed.setdefault(route.bot.name, []).append(_matcher(route.matcher))
    described = []
    for name, bot in app.bots.items():
        described.append(
            {
                "name": name,
                "enabled": True,
                "source": app.sources.get(name, "app"),
                "default": name == app.default_bot,
                "subdomain": bot.subdomain,
                "settings": app.bot_settings.get(name, {}),
                "sender_policy": bot.sender_policy,
                "routes": routed.get(name, []),
                "command_style": bot.command_style,
                "commands": [
                    {
                        "name": cmd.name,
                        "usage": cmd.usage if bot.command_style == "slash" else cmd.usage[1:],
                        "help": cmd.help,
                        "who": cmd.who,
                        "confirm": cmd.confirm,
                    }
                    for cmd in sorted(bot.commands.values(), key=lambda c: c.name)
                ],
            }
        )
    described += [
        {"name": name, "enabled": False, "source": source} for name, source in app.disabled.items()
    ]
    return described


def _matcher(matcher: Matcher) -> str:
    if isinstance(matcher, str):
        return matcher if "@" in matcher else f"{matcher}@"
    if isinstance(matcher, re.Pattern):
        return f"/{matcher.pattern}/"
    return getattr(matcher, "__qualname__", repr(matcher))
