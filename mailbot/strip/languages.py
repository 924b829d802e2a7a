"""Which language a quote header is written in, for the name of the rule that cut
(``header:de`` for "Am … schrieb Bob:"): a wrong cut reported with one look says which
language's rule made it. Read from the attribution verb; None when no verb says it."""

from __future__ import annotations

import re

# Longest first where one verb starts another ("a écrit" before "écrit").
_VERBS = {
    "en": "wrote|writes",
    "de": "schrieb|schreibt",
    "fr": "a écrit|a ecrit|écrit",
    "es": "escribió|escribio",
    "ca": "escrit",
    "pt": "escreveu",
    "it": "ha scritto|scrive",
    "nl": "het volgende geschreven|schreef|geschreven",
    "sv": "skrev|skriver",
    "fi": "kirjoitti",
    "pl": "napisał|napisała|napisala|pisze",
    "cs": "napsal",
    "ru": "написал|написала",
    "uk": "написав",
    "hu": "írta",
    "el": "έγραψε",
    "tr": "yazdı",
    "zh": "写道|寫道",
    "ja": "が書きました|のメッセージ",
    "ko": "작성",
    "ro": "a scris",
    "id": "menulis",
    "th": "เขียน",
    "vi": "đã viết",
    "he": "כתב",
    "ar": "كتب",
}
_FIND = re.compile("|".join(f"(?P<{code}>{verbs})" for code, verbs in _VERBS.items()), re.I)


def header_language(line: str) -> str | None:
    """The language code of the last attribution verb in ``line``, if one is there."""
    found = list(_FIND.finditer(line[-300:]))
    return found[-1].lastgroup if found else None
