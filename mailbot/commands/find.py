"""Which lines of a mail's own text are commands.

Only the person's own text is read: the caller passes the reply with the quoted history and
the signature already cut (mailbot/strip/), so a ``/close`` quoted from an earlier mail never
runs again. Two ways to write them:

- **in a reply** (``slash``): any line ``/name arguments``, outside fenced code blocks and
  indented code. A known command's line is lifted out of the text that becomes the
  comment; an unknown one stays in it (``/shrug`` may be meant as text) and is reported;
- **in mail to a command address** (``lines``): lines from the top, ``/`` optional, blank
  lines skipped; reading stops at ``thanks``, ``--`` or a sign-off, silently, or at the
  first line that is not a command, which is reported (as debbugs' ``control@`` does).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

SLASH = re.compile(r"^ {0,3}/([A-Za-z][A-Za-z0-9_-]{0,39})(?:[ \t]+(.*))?$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")
# Where a command mail's commands end (debbugs stops at "thanks" and "--" alike).
STOPS = frozenset({"thanks", "thank you", "thankyou", "thx", "quit", "stop", "end", "cheers"})
MAX_COMMANDS = 50  # a mail with more is read up to here; the rest is not run


@dataclass(frozen=True)
class Invocation:
    name: str  # lower-cased
    args: str
    line: str  # as written, for the transcript


@dataclass(frozen=True)
class Found:
    commands: tuple[Invocation, ...]
    text: str  # what is left of the text once the known commands' lines are lifted out


def in_reply(text: str, known: Collection[str]) -> Found:
    """``/name`` lines anywhere in a reply's own text."""
    kept: list[str] = []
    found: list[Invocation] = []
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        match = None if fenced or len(found) >= MAX_COMMANDS else SLASH.match(line.rstrip())
        if match is None:
            kept.append(line)
            continue
        name = match.group(1).lower()
        found.append(Invocation(name, (match.group(2) or "").strip(), line.strip()))
        if name not in known:
            kept.append(line)
    return Found(tuple(found), _tidy(kept) if found else text)


def commands_atop(signature: str | None, known: Collection[str]) -> str:
    """The known commands' lines at the top of a signature that no "-- " line opened: talon's
    classifier takes a few short lines ending a reply for a signature, and ``/label bug`` is
    such a line. An unknown ``/John`` (a Nordic sign-off) stays in the signature."""
    lines = (signature or "").splitlines()
    if lines and lines[0].strip() == "--":
        return ""
    taken: list[str] = []
    for line in lines:
        match = SLASH.match(line.rstrip())
        if line.strip() and (match is None or match.group(1).lower() not in known):
            break
        taken.append(line)
    return "\n".join(taken).strip()


def in_command_mail(text: str, known: Collection[str]) -> Found:
    """Command lines from the top of a mail to a command address; the rest is left."""
    lines = text.splitlines()
    found: list[Invocation] = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            continue
        if _stops(stripped) or len(found) >= MAX_COMMANDS:
            return Found(tuple(found), _tidy(lines[index:]))
        word, _, args = stripped.removeprefix("/").partition(" ")
        found.append(Invocation(word.lower(), args.strip(), stripped))
        if word.lower() not in known:  # reported, and nothing after it is read
            return Found(tuple(found), _tidy(lines[index + 1 :]))
    return Found(tuple(found), "")


def _stops(line: str) -> bool:
    return line.startswith("--") or line.lower().rstrip(".,!;: ") in STOPS


def _tidy(lines: list[str]) -> str:
    """Lines joined, with the runs of blank lines a lifted command leaves closed up."""
    text = re.sub(r"\n[ \t]*(?:\n[ \t]*)+\n", "\n\n", "\n".join(lines))
    return text.strip()
