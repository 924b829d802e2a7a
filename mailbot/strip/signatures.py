"""Signatures and footers at the end of a reply, beyond what talon's rules and model find.

Looked for only in the last lines of the reply, so a "Sent from my desk" in the middle of a
sentence, or a line of ``---`` inside the text, never cuts what follows:

- mobile and client footers: "Sent from my iPhone", "Get Outlook for Android", "Sent from
  Mail for Windows 10", "Von meinem iPhone gesendet" and their translations into some 28
  languages, with or without the client's link after them;
- mailing-list footers: a rule of ``_`` followed by "... mailing list" lines;
- a sign-off line ("Regards,", "Mit freundlichen Grüßen", "Med venlig hilsen", "Pozdrawiam",
  ...) followed by at most three short name/title lines;
- a lone "-Name" or "/Name" line closing the text.

Each rule gives the index where the signature starts; the earliest wins, but never the first
line: a reply is never emptied by its signature.
"""

from __future__ import annotations

import re

_MOBILE = re.compile(
    r"^\s*(sent (from|via|with) [^,.!?]{1,40}|get outlook for [^,.!?]{1,30}|"
    r"(sent )?via (mobile|phone|iphone|android|ipad|blackberry)|"
    r"(von|gesendet von|gesendet mit) .{1,40}(gesendet)?|envoyé (de|depuis) .{1,40}|"
    r"enviado (desde|de|do) .{1,40}|inviato da .{1,40}|verzonden (vanaf|met) .{1,40}|"
    r"skickat från .{1,40}|sendt fra .{1,40}|wysłane z .{1,40}|отправлено (с|из) .{1,40}|"
    r".{1,20}から送信|发自我的.{1,20}|从我的.{1,20}发送|"
    # The newer translations say little more than "sent from": they must name a device or
    # a mail app too, so "Paket dün depodan gönderildi" stays the person's sentence.
    r"(?=.{0,60}(iphon|ipad|android|samsung|galaxy|pixel|huawei|xiaomi|outlook|gmail|yahoo|"
    r"mail|mobil|telefon|phone|typeapp|blackberry))"
    r"(verstuurd (vanaf|met) .{1,40}|lähetetty .{1,30}(sta|stä|lta|ltä)|.{1,30} küldve|"
    r"trimis de pe .{1,40}|.{1,30}(dan|den) gönderildi|στάλθηκε από .{1,40}|"
    r"odesláno z .{1,40}|надіслано з .{1,40}|נשלח מ.{1,40}|أرسلت من .{1,40}|"
    r"được gửi từ .{1,40}|dikirim dari .{1,40}|ส่งจาก .{1,40}|.{1,30}에서 보냄|"
    r"outlook (für|voor) .{1,20} herunterladen|outlook voor .{1,20} downloaden|"
    r"(obtenir|obtener|obter|scarica|pobierz|skaffa|hent) outlook (pour|para|per|dla|för|til) "
    r".{1,20}))"
    # A client's own link after it: "Get Outlook for iOS<https://aka.ms/…>".
    r"(\s*<?https?://\S*>?)?\s*$",
    re.IGNORECASE,
)
_SIGNOFF = re.compile(
    r"^\s*(best|kind|warm|many thanks|thanks|thank you|regards|best regards|kind regards|"
    r"warm regards|cheers|sincerely|yours|yours truly|all the best|br|rgds|thx|"
    r"mit freundlichen grüßen|mit freundlichen grüssen|viele grüße|viele grüsse|beste grüße|"
    r"liebe grüße|lg|vg|mfg|gruß|grüße|"
    r"med venlig hilsen|venlig hilsen|mvh|hilsen|kh|kærlig hilsen|med vennlig hilsen|"
    r"med vänliga hälsningar|vänliga hälsningar|mvh|hälsningar|"
    r"pozdrawiam|z poważaniem|z powazaniem|pozdrowienia|"
    r"met vriendelijke groet(en)?|vriendelijke groet(en)?|groet(en)?|"
    r"cordialement|bien à vous|bien cordialement|salutations|"
    r"saludos|saludos cordiales|un saludo|atentamente|"
    r"cumprimentos|atenciosamente|abraços|"
    r"cordiali saluti|saluti|distinti saluti|"
    r"с уважением|спасибо|"
    r"敬具|よろしくお願いします|よろしくお願いいたします|此致)[\s,.!]*$",
    re.IGNORECASE,
)
_NAME = re.compile(r"^\s*[A-Z][\w.'-]+( [A-Z][\w.'-]+){0,2}\s*$")
_NAME_LINE = re.compile(r"^\s*\S.{0,40}$")
_DASH_NAME = re.compile(r"^\s*[-/–—]\s?[A-Z][\w.'-]*( [A-Z][\w.'-]*){0,2}\s*$")
_CONTACT = re.compile(r"^\s*\S.{0,60}$")
_SENTENCE = re.compile(r"\w+ \w+ \w+.*[.!?]$")
_LIST_FOOTER = re.compile(r"^\s*_{10,}\s*$")


_NAMED_SIGNOFF = re.compile(
    r"^\s*(?P<signoff>[^,]{1,30}),\s*[^\W\d_][\w.'-]*( [^\W\d_][\w.'-]*){0,2}\s*$"
)
_SIGNER = re.compile(r"^\s*[^\W\d_][\w.'-]*( [^\W\d_][\w.'-]*){0,2}\s*$")


def _is_name(line: str) -> bool:
    """ "Jef", "Anders Andersen", "Søren": a short line of capitalised words, no digits."""
    words = line.split()
    return (
        0 < len(words) <= 3
        and _SIGNER.match(line) is not None
        and all(w[0].isupper() for w in words)
    )


def is_signoff(line: str) -> bool:
    """ "Thanks,", "Best regards", "Cheers, Jef": the person closing their text."""
    named = _NAMED_SIGNOFF.match(line)
    return _SIGNOFF.match(line) is not None or (
        named is not None and _SIGNOFF.match(named.group("signoff")) is not None
    )


def opens_signature(line: str) -> bool:
    """Whether a line, first after a quote, starts a sign-off or signature, not an answer."""
    bare = line.strip()
    return (
        bare in ("--", "—")
        or _LIST_FOOTER.match(line) is not None
        or _MOBILE.match(line) is not None
        or is_signoff(line)
    )


def after_signoff(lines: list[str], cut: int) -> int:
    """A sign-off belongs to the message (issue #14): where a signature starting at ``cut``
    with "Best regards,\nJef" really starts, below the sign-off and the name under it."""
    i = cut
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i >= len(lines) or not is_signoff(lines[i]):
        return cut
    i += 1
    if _SIGNOFF.match(lines[i - 1]):
        j = i + 1 if i + 1 < len(lines) and not lines[i].strip() else i  # one blank between
        if j < len(lines) and _is_name(lines[j]):
            i = j + 1  # the name signing it
    return i


def signature_starts(lines: list[str]) -> list[tuple[int, str]]:
    """Every place one of these rules sees a signature start, with the rule's short name."""
    content = [i for i, line in enumerate(lines) if line.strip()]
    if len(content) < 2:
        return []
    tail = content[-6:]
    starts: list[tuple[int, str]] = []
    for i in tail:
        if _MOBILE.match(lines[i]) and i in content[-2:]:
            # "Bob Smith" right above "via mobile" signs the same footer.
            above = i - 1
            named = above >= 0 and _NAME.match(lines[above]) is not None
            starts.append((above if named and above != content[0] else i, "footer:mobile"))
        if _LIST_FOOTER.match(lines[i]) and any(
            "mailing list" in lines[j].lower() or "listinfo" in lines[j] for j in tail if j > i
        ):
            starts.append((i, "footer:mailing-list"))
    delimiters = [i for i in content[1:] if lines[i].rstrip() in ("--", "-- ", "—")]
    if delimiters:
        starts.append((delimiters[0], "signature:dashes"))  # the standard "-- " delimiter
    before_footer = [i for i in content if not starts or i < min(starts)[0]]
    if before_footer and _DASH_NAME.match(lines[before_footer[-1]]):
        starts.append((before_footer[-1], "signature:dash-name"))
    for n in (1, 2, 3, 4, 5):
        if len(content) > n:
            i = content[-n - 1]
            names = content[-n:]
            short = all(_NAME_LINE.match(lines[j]) or _CONTACT.match(lines[j]) for j in names)
            if (
                is_signoff(lines[i])
                and short
                and not any(_SENTENCE.search(lines[j]) for j in names)
            ):
                starts.append((i, "signature:sign-off"))
    return [(i, rule) for i, rule in starts if i != content[0]]
