"""How a bot declares its commands, and how a command's arguments are read.

>>> from mailbot import Bot, command
>>> class Tickets(Bot):
...     name = "tickets"
...     @command(help="close this ticket", confirm=True)
...     async def close(self, mail): ...
...     @command(help="add labels", who="verified")
...     async def label(self, mail, labels: list[str]): ...
>>> sorted(Tickets.commands), Tickets.commands["label"].usage
(['close', 'label'], '/label LABELS')

The arguments after ``mail`` are read from the rest of the command's line, by their type:
``int`` and ``str`` take one word (a ``str`` that comes last takes the rest of the line),
``list[str]`` (last) takes the rest split at commas and spaces, and ``Participant`` takes
``@name``, a local part or an address and finds that participant of the conversation. An
argument with a default may be left out. Anything else is refused when the class is made.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mailbot.store.models import Participant

ANYONE = "anyone"  # whoever sent the mail (mail to a command address)
PARTICIPANT = "participant"  # a participant of the conversation (the default)
VERIFIED = "verified"  # a participant whose mail passed DMARC, or who logged in (SMTP AUTH)
# Any other ``who`` is a role: participants whose ``roles`` hold it.

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
BUILTIN = frozenset({"help", "confirm"})  # every bot answers these (mailbot/commands/run.py)
_TYPES = (str, int, list, Participant)
F = TypeVar("F", bound=Callable[..., Any])


class CommandError(Exception):
    """Raised by a command, or while reading its arguments, to refuse it: the sender is told
    the message. Nothing the command wrote is kept (it runs in a savepoint)."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: type
    optional: bool
    default: Any

    @property
    def usage(self) -> str:
        shown = "@someone" if self.kind is Participant else self.name.upper()
        return f"[{shown}]" if self.optional else shown


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    who: str
    confirm: bool
    method: str  # the bot's method that runs it
    params: tuple[Param, ...] = ()

    @property
    def usage(self) -> str:
        return " ".join([f"/{self.name}", *(p.usage for p in self.params)])


def command(
    name: str | None = None, *, help: str = "", who: str = PARTICIPANT, confirm: bool = False
) -> Callable[[F], F]:
    """Mark a bot method as the command ``/name`` (default: the method's name, ``_`` → ``-``).

    The method is ``async def close(self, mail, *arguments) -> str | None``; what it returns
    is told to the sender (``None``: "done"); :class:`CommandError` refuses the command.
    ``who`` is ``"participant"``, ``"verified"``, ``"anyone"`` or a role's name; ``confirm``
    asks the sender to confirm by a second reply before the command runs."""

    def mark(method: F) -> F:
        wanted = (name or method.__name__).lower().replace("_", "-")
        if not NAME.match(wanted) or wanted in BUILTIN:
            raise TypeError(f"{wanted!r} cannot be a command's name")
        method.__mailbot_command__ = Command(  # type: ignore[attr-defined]
            wanted, help.strip(), who, confirm, method.__name__
        )
        return method

    return mark


def commands_of(bot: type) -> dict[str, Command]:
    """The commands ``bot`` declares (its own and inherited), each with its arguments read
    off the method's signature. Raises TypeError for an argument it could not read."""
    found: dict[str, Command] = {}
    for klass in reversed(bot.__mro__):
        for attribute in vars(klass).values():
            marked = getattr(attribute, "__mailbot_command__", None)
            if isinstance(marked, Command):
                found[marked.name] = _with_params(marked, attribute)
    return found


def _with_params(marked: Command, method: Callable[..., Any]) -> Command:
    hints = typing.get_type_hints(method)
    params = list(inspect.signature(method).parameters.values())[2:]  # after self and mail
    read: list[Param] = []
    for position, param in enumerate(params):
        hint = hints.get(param.name, str)
        optional = param.default is not inspect.Parameter.empty
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if type(None) in typing.get_args(hint) and len(args) == 1:
            hint, optional = args[0], True  # X | None
        kind = typing.get_origin(hint) or hint
        last = position == len(params) - 1
        if kind not in _TYPES or (kind is list and (typing.get_args(hint) != (str,) or not last)):
            raise TypeError(f"/{marked.name}: argument {param.name!r} has a type not read here")
        default = None if param.default is inspect.Parameter.empty else param.default
        read.append(Param(param.name, kind, optional, default))
    return Command(marked.name, marked.help, marked.who, marked.confirm, marked.method, tuple(read))


def read_args(cmd: Command, text: str, people: Sequence[Participant]) -> list[Any]:
    """The values of ``cmd``'s arguments in ``text``; :class:`CommandError` if they are not
    there or not what the command takes."""
    rest = " ".join(text.split())
    values: list[Any] = []
    for position, param in enumerate(cmd.params):
        last = position == len(cmd.params) - 1
        word: str | list[str]
        if param.kind is list:
            items = [item for item in re.split(r"[,\s]+", rest) if item]
            word, rest = items, ""
        elif param.kind is str and last:
            word, rest = rest, ""
        else:
            word, _, rest = rest.partition(" ")
        if not word:
            if not param.optional:
                raise CommandError(f"{param.usage} is missing")
            values.append(param.default)
            continue
        values.append(_value(param, word, people))
    if rest:
        raise CommandError(f"too much after the arguments: {rest[:40]!r}")
    return values


def _value(param: Param, word: Any, people: Sequence[Participant]) -> Any:
    if param.kind is int:
        try:
            return int(word)
        except ValueError:
            raise CommandError(f"{param.usage} must be a number, not {word[:40]!r}") from None
    if param.kind is Participant:
        return find_participant(word, people)
    return word


def find_participant(word: str, people: Sequence[Participant]) -> Participant:
    """The one participant ``@bob``, ``bob`` or ``bob@example.com`` names."""
    wanted = word.removeprefix("@").lower()
    found = [
        p
        for p in people
        if wanted in (p.email, p.email.split("@", 1)[0], "".join(p.name.lower().split()))
    ]
    if len(found) != 1:
        how = "several participants" if found else "no participant"
        raise CommandError(f"{word[:60]!r} names {how} of this conversation")
    return found[0]
