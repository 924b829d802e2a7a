"""Regression fixtures for the strip stage, made from a complaint in one command.

``mailbot strip-case MESSAGE_ID --expect FILE`` reads a stored message the way the server
does (:func:`mailbot.parse.parse`), replaces every mail address and every name it can see
(the display names of From, To, Cc and Reply-To and of the conversation's participants, the
words of those addresses' local parts)
by placeholders, the same ones in the body and in the expected reply, and writes a folder to
``tests/strip_cases/``:

- ``text.txt`` and/or ``body.html``: the message's bodies, anonymised;
- ``expected.txt``: the reply the person meant (the FILE given), anonymised the same way;
- ``sent-1.txt``, …: the text of the mails we had sent that person when the reply came (the
  ``sent-text`` cut looks for them in the quote), newest first, anonymised the same way;
- ``case.json``: the anonymised sender and where the case came from.

``tests/test_strip_cases.py`` loads every folder there and checks that the reply, cut as the
server cut it (with those sent texts), is the expectation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mailbot.parse import ParsedMail

# Any domain, dotted or not: a reply address on "localhost" holds a live token too.
_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)*")
_NAME_PART = re.compile(r"[^\W\d_]{3,}")
_NAMED_ADDRESS = re.compile(
    r"(?:^|[:,;]|\b(?:From|Von|De|Da|Van)\b)[ \t]*\"?"
    r"(?P<name>[^\"<>\n:,;@]{2,60}?)\"?[ \t]*<[^<>@\s]+@",
    re.MULTILINE,
)
_SAFE_NAME = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class Case:
    name: str
    text: str | None
    html: str | None
    sender: str | None
    expected: str
    sent: tuple[str, ...] = ()  # what we had sent the person, newest first


class Anonymiser:
    """The same placeholder for the same address or name wherever it appears."""

    def __init__(
        self, mail: ParsedMail, *texts: str | None, people: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.addresses: dict[str, str] = {}
        names: set[str] = set()
        # The mail's own people, and (``people``: name, address) those of its conversation,
        # whose names the notifications we sent carry ("Alice wrote:").
        heads = [(p.name or "", p.address) for p in [*mail.from_, *mail.to, *mail.cc]]
        heads += [(p.name or "", p.address) for p in mail.reply_to]
        for name, address in [*heads, *people]:
            self._address(address)
            names.update(_NAME_PART.findall(name))
            names.update(_NAME_PART.findall(address.split("@")[0]))
        for text in texts:
            # Names in the quoted headers too: 'Von: "Jonas Weber" <jonas@…>'.
            for found in _NAMED_ADDRESS.finditer(text or ""):
                names.update(_NAME_PART.findall(found.group("name")))
        # Longest first, so "Andersen" is not left as "Person 1sen".
        self.names = {n: f"Person{i + 1}" for i, n in enumerate(sorted(names, key=len)[::-1])}
        words = "|".join(re.escape(n) for n in self.names)
        self._names = re.compile(rf"\b({words})\b", re.IGNORECASE) if words else None

    def _address(self, address: str) -> str:
        key = address.lower()
        if key not in self.addresses:
            self.addresses[key] = f"person{len(self.addresses) + 1}@example.com"
        return self.addresses[key]

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        text = _ADDRESS.sub(lambda m: self._address(m.group()), text)
        if self._names is None:
            return text
        lowered = {k.lower(): v for k, v in self.names.items()}
        return self._names.sub(lambda m: lowered[m.group().lower()], text)


def make_case(
    mail: ParsedMail,
    expected: str,
    name: str,
    sent: tuple[str, ...] = (),
    people: Sequence[tuple[str, str]] = (),
) -> Case:
    hide = Anonymiser(mail, mail.text, mail.html, expected, *sent, people=people)
    return Case(
        name=_SAFE_NAME.sub("-", name.lower()).strip("-") or "case",
        text=hide(mail.text),
        html=hide(mail.html),
        sender=hide(mail.sender),
        expected=hide(expected) or "",
        sent=tuple(hide(text) or "" for text in sent),
    )


def write_case(case: Case, root: Path, source: str) -> Path:
    """The case's folder under ``root`` (a new name if that one is taken)."""
    folder = root / case.name
    n = 2
    while folder.exists():
        folder = root / f"{case.name}-{n}"
        n += 1
    folder.mkdir(parents=True)
    if case.text is not None:
        (folder / "text.txt").write_text(case.text, encoding="utf-8")
    if case.html is not None:
        (folder / "body.html").write_text(case.html, encoding="utf-8")
    (folder / "expected.txt").write_text(case.expected, encoding="utf-8")
    for n, text in enumerate(case.sent, start=1):
        (folder / f"sent-{n}.txt").write_text(text, encoding="utf-8")
    meta = {"sender": case.sender, "source": source}
    (folder / "case.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder


def read_case(folder: Path) -> Case:
    def text(name: str) -> str | None:
        path = folder / name
        return path.read_text(encoding="utf-8") if path.exists() else None

    meta = json.loads((folder / "case.json").read_text(encoding="utf-8"))
    sent: list[str] = []
    while (found := text(f"sent-{len(sent) + 1}.txt")) is not None:
        sent.append(found)
    return Case(
        folder.name,
        text("text.txt"),
        text("body.html"),
        meta.get("sender"),
        text("expected.txt") or "",
        tuple(sent),
    )
