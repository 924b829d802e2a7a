"""Which lines start a quote header, and how many lines it spans (:mod:`mailbot.strip.quotes`
reads a body with these): attribution lines in many languages, also broken in two by the
sender's client, Outlook header blocks, separators, ``>`` quoted lines and forwards.
"""

from __future__ import annotations

import re

from mailbot.strip.languages import header_language

_WROTE = (
    r"wrote|writes|sent|schrieb|schreibt|a écrit|a ecrit|écrit|escribió|escribio|escrit|"
    r"escreveu|ha scritto|scrive|schreef|het volgende geschreven|geschreven|skrev|skriver|"
    r"kirjoitti|napisał\(a\)|napisał|"
    r"napisala|napisała|pisze|đã viết|napsal\(a\)|napsal|написал\(а\)|написал|написала|"
    r"написав\(ла\)|написав|написала|írta|έγραψε|yazdı|写道|寫道|が書きました|のメッセージ|작성|"
    r"a scris|menulis|เขียนว่า|เขียน|כתב/ה|כתבה|כתב|كتب"
)
_VERB_FIRST = (
    r"schrieb|skrev|skriver|a écrit|escribió|escribio|escrit|escreveu|ha scritto|schreef|"
    r"napisał\(a\)|napisał|pisze|napsal|написал|написала|написав|كتب"
)
# Right-to-left mail (Hebrew, Arabic) wraps names, addresses and the whole line in invisible
# direction marks; they may sit anywhere a blank may.
_BIDI = r"[\s\u200e\u200f\u202a-\u202e\u2066-\u2069]"
# An attribution: starts with an opener or a date, ends with a "wrote" verb and a colon.
_ATTRIBUTION = re.compile(
    # Possessive tails: a long run of blanks after the verb is read once, not every way the
    # three runs could share it (cubic; 146 s for 4 KB of blanks before this). The verb is a
    # word of its own in alphabetic scripts: "absent" does not end in "sent".
    rf"^{_BIDI}*(?!>).{{0,240}}?(?<![A-Za-z\u00c0-\u024f\u0400-\u04ff])(?:{_WROTE}){_BIDI}*+[:：]?{_BIDI}*+-*+{_BIDI}*+$|"
    # German, Nordic, Romance, Arabic: the verb before the name, "Am <date> schrieb Bob:"
    rf"^{_BIDI}*(?!>)(?=.*\d).{{0,200}}?\b(?:{_VERB_FIRST})\s.{{1,80}}[:：]{_BIDI}*$|"
    # Hungarian: "Bob <bob@example.com> ezt írta (időpont: 2026. nov. 28., Szo, 10:21):"
    rf"^{_BIDI}*(?!>).{{0,200}}?\bírta\s*\(.{{1,80}}\)\s*[:：]{_BIDI}*$|"
    # Gmail's dated form and others ending "<address>:" after a date or time
    rf"^{_BIDI}*(?!>)(?=.*\d).{{0,200}}(?:<{_BIDI}*[^<>\s]+@[^<>\s]+{_BIDI}*>|\S+@\S+\.\w+)"
    rf"{_BIDI}*[:：]{_BIDI}*$",
    re.IGNORECASE,
)
OPENER = re.compile(
    r"^\s*(-{2,}|(on|am|le|el|em|il|op|den|dne|dnia|w dniu|в|у|på|el día|pe|în|pada|vào|"
    r"στις|בתאריך|ב|في|เมื่อ)\b|"
    r"\d|\w{2,4}\.?,? \d|[\u4e00-\u9fff]|在)",
    re.IGNORECASE,
)
_FIELD = (
    r"from|von|de|da|od|van|från|fra|frá|от|від|发件人|寄件者|差出人|보낸 사람|lähettäjä|feladó|"
    r"de la|kimden|από|dari|từ|מאת|من|จาก|"
    r"sent|gesendet|envoyé|enviado el|enviado|enviada|inviato|wysłano|verzonden|skickat|sendt|"
    r"отправлено|lähetetty|elküldve|odesláno|trimis|gönderildi|αποστολή|dikirim|đã gửi|נשלח|"
    r"تاريخ الإرسال|ส่ง|"
    r"надіслано|发送时间|送信日時|date|datum|data|fecha|дата|日期|日時|päivämäärä|dátum|tarih|"
    r"ημερομηνία|tanggal|ngày|תאריך|التاريخ|วันที่|"
    r"to|an|à|a|para|do|aan|till|til|кому|收件人|宛先|받는 사람|vastaanottaja|címzett|komu|"
    r"către|kime|προς|kepada|đến|אל|إلى|ถึง|"
    r"cc|kopie|копия|抄送|"
    r"subject|betreff|objet|asunto|assunto|oggetto|temat|onderwerp|ämne|emne|тема|主题|主旨|件名|제목|"
    r"aihe|tárgy|předmět|subiect|konu|θέμα|subjek|chủ đề|נושא|الموضوع|เรื่อง"
)
# "\s*+(?:\*\s*+)?", not "\s*\*?\s*": the same lines, but a long run of blanks is read once
# instead of every way two "\s*" can share it (quadratic; found by the fuzz test).
_HEADER_LINE = re.compile(rf"^\s*+(?:\*\s*+)?({_FIELD})\s*+(?:\*\s*+)?[:：]", re.IGNORECASE)
_FROM_LINE = re.compile(
    r"^\s*+(?:\*\s*+)?(from|von|de|da|od|van|från|fra|frá|от|від|发件人|寄件者|差出人|보낸 사람|"
    r"lähettäjä|feladó|de la|kimden|από|dari|từ|מאת|من|จาก)\s*+(?:\*\s*+)?[:：]",
    re.IGNORECASE,
)
_ORIGINAL = re.compile(
    # "[-_=*\s]*", not "\s*[-_=*\s]*\s*": three ways to read each blank backtrack in cubic
    # time on a long blank line (found by the fuzz test: minutes for a few kilobytes).
    r"^[-_=*\s]*(original message|ursprüngliche nachricht|originalnachricht|"
    r"message d'origine|message original|mensaje original|mensagem original|"
    r"messaggio originale|oorspronkelijk bericht|originalmeddelande|ursprungligt meddelande|"
    r"oprindelig meddelelse|opprinnelig melding|исходное сообщение|wiadomość oryginalna|"
    r"původní zpráva|原始邮件|元のメッセージ|reply message|reply above this line|antwort nachricht)"
    r"[-_=*\s]*$|"
    # any "-----<Xyz> Message-----" separator
    r"^\s*-{3,}\s*[\w' ]{0,30}(message|nachricht|bericht|mensaje|messaggio|mensagem|meddelande|"
    r"meddelelse|melding|wiadomość|zpráva|сообщение)[\w' ]{0,20}\s*-{3,}\s*$",
    re.IGNORECASE,
)
FORWARD = re.compile(
    r"^[-_=*\s]*(forwarded message|begin forwarded message|weitergeleitete nachricht|"
    r"message transféré|mensaje reenviado|mensagem encaminhada|messaggio inoltrato|"
    r"doorgestuurd bericht|vidarebefordrat meddelande|videresendt meddelelse|"
    r"пересылаемое сообщение|转发的邮件)",
    re.IGNORECASE,
)
_MID_OPENER = re.compile(r"(?:\s|-{2,})(On|Am|Le|El|Em|Il|Op|Den|W dniu|Dnia) ")
_ENDINGS = (":", "：", "-", ">")
_VERBS = tuple(v.replace("\\", "") for v in _WROTE.split("|"))
_STRONG_OPENER = re.compile(r"^\s*(on|am|le|el|em|il|op|den|w dniu|dnia)\s", re.IGNORECASE)
_QUOTED_TAIL = re.compile(rf"^>\s*(:|(?:{_WROTE})\s*[:：]?$)", re.IGNORECASE)
# The field words mailbot knew before the languages of issue #14; a block opened by one of the
# newer, shorter words ("Dari:", "من:", "אל:") must also name an address or a date, so a
# travel plan ("Dari: Jakarta / Ke: Bali") is not taken for a quote header.
_ANY_FIELD_WORD = re.compile(
    r"^\s*+(?:\*\s*+)?(from|von|de|da|od|van|från|fra|frá|от|від|发件人|寄件者|差出人|보낸 사람|"
    r"lähettäjä|feladó|sent|gesendet|envoyé|enviado|inviato|wysłano|verzonden|skickat|sendt|"
    r"date|datum|data|fecha|дата|to|an|para|aan|till|til|кому|cc|subject|betreff|objet|"
    r"asunto|assunto|oggetto|temat|onderwerp|ämne|emne|тема)\s*+(?:\*\s*+)?[:：]",
    re.IGNORECASE,
)
_NAME_ONLY = re.compile(r"^\s*[^\W\d_][\w'.-]*(?: [^\W\d_][\w'.-]*){0,3}\s*$")
_ADDRESS_FIRST = re.compile(r"^\s*<[^<>\s]+@[^<>\s]+>")
_DATE_START = re.compile(r"^\s*\d{1,4}[./-]\d{1,2}[./-]\d{1,4}\b")
_RULE = re.compile(r"^\s*([-_=*])\1{9,}\s*$")
_DATE_LINE = re.compile(r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}|\d{1,2}:\d{2}")
# Every start test of a line at once (one call, not five): no match means the line starts
# no forward, opener, separator, rule or header field. _RULE's "\1" is named here. A field
# is read as any text without a digit, no longer than the longest field word, then a colon:
# what _HEADER_LINE accepts and more, without trying its hundred words one by one (taken
# whole: if a shorter text then blanks and stars reach the colon, so does the longest).
_FIELD_LONGEST = max(len(word) for word in _FIELD.split("|"))
_MAY_START = re.compile(
    "|".join(f"(?:{x.pattern})" for x in (FORWARD, _ORIGINAL))
    + rf"|^(?=[^:：]*+[:：])\s*+(?:\*\s*+)?[^:：\d]{{1,{_FIELD_LONGEST}}}+[\s*]*+[:：]"
    + r"|^\s*(?P<rule>[-_=*])(?P=rule){9,}\s*$"
    + f"|(?P<opener>{OPENER.pattern})",  # last: when it is the one, all the others failed
    re.IGNORECASE,
)


def header_kind(lines: list[str], i: int) -> str:
    """The short name of the quote header at line ``i`` (a cut's explanation)."""
    kinds = ((_ORIGINAL, "separator:original-message"), (_RULE, "separator:rule"))
    for rule, kind in (*kinds, (_HEADER_LINE, "header:fields")):
        if rule.match(lines[i]):
            return kind
    return f"header:{header_language(' '.join(lines[i : i + 3])) or 'attribution'}"


def may_start_quote(lines: list[str], i: int, ends: dict[int, bool] | None = None) -> bool:
    """False when no rule of :func:`mailbot.strip.quotes.split_quote` can fire at line ``i``
    (no forward, separator, header field, ">", attribution ending, no address on the next
    line; an opener none of whose next lines ends an attribution): most lines of a long
    body, told at the cost of a few tests. ``ends``: lines known to end like an
    attribution or not, by index (a reading that moves down keeps it; lines not changed)."""
    line = lines[i]
    start = _MAY_START.match(line)
    if start is not None and start.group("opener") is None:
        return True  # a forward, a separator, a header field or a rule may start here
    if line.lstrip().startswith(">"):
        return True
    ending = ends.get(i) if ends is not None else None
    if ending is None:
        ending = could_end_attribution(line)
    if ending:
        return True
    if start is None:  # else only a name above an "<address> wrote:" line
        return i + 1 < len(lines) and "<" in lines[i + 1]
    # An opener ("On <date>", "Line 3"): an attribution only with an address or as far as
    # a line it may join (the lines header_size joins) ends like one.
    if "@" in line:
        return True
    dated = _STRONG_OPENER.match(line) is not None and _DATE_LINE.search(line) is not None
    for j in range(i + 1, min(len(lines), i + (6 if dated else 3))):
        ending = ends.get(j) if ends is not None else None
        if ending is None:
            ending = could_end_attribution(lines[j])
            if ends is not None:
                ends[j] = ending
        if ending:
            return True
    return False


def is_quoted(line: str) -> bool:
    # ">>> http://example.com <<<" is a decoration, not a quote.
    return line.lstrip().startswith(">") and not line.rstrip().endswith("<<<")


def skip_leading_header(lines: list[str]) -> int:
    """A header block with nothing before it (a pasted header): where the text after it starts."""
    i = 0
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i < len(lines) and _FROM_LINE.match(lines[i]):
        size = _block_size(lines, i)
        if size:
            return i + size
    return 0


def header_size(lines: list[str], i: int) -> int:
    """How many lines the quote header starting at line ``i`` spans; 0 if none starts there."""
    line = lines[i]
    if _ORIGINAL.match(line):
        return 1
    if _RULE.match(line):
        ahead = [x for x in lines[i + 1 : i + 4] if x.strip()][:1]
        if ahead and (_HEADER_LINE.match(ahead[0]) or _DATE_LINE.search(ahead[0])):
            return 1
        return 0
    if (":" in line or "：" in line) and _HEADER_LINE.match(line):  # no colon, no field: cheap
        size = _block_size(lines, i, needed=2 if _FROM_LINE.match(line) else 3)
        if size and (_ANY_FIELD_WORD.match(line) or _names_mail(lines[i : i + size])):
            return size
        if (
            _FROM_LINE.match(line)
            and "@" in line
            and (i + 1 == len(lines) or not lines[i + 1].strip())
        ):
            return 1  # a lone "From: Bob <bob@example.com>" above a blank line
        return 0
    if not line.strip() or len(line) > 300:
        return 0
    if "@" in line and _DATE_START.match(line) and _next_is_quoted(lines, i):
        return 1  # "2011/4/7 Name <address>" right above the quote, no colon
    if (
        could_end_attribution(line)
        and _ATTRIBUTION.match(line)
        and (OPENER.match(line) or _mentions_sender(line))
    ):
        return 1
    if OPENER.match(line):
        # An attribution line broken in two or more by the sender's client; Polymail even
        # puts blank lines and a "> wrote:" inside it.
        dated = _STRONG_OPENER.match(line) is not None and _DATE_LINE.search(line) is not None
        joined = line.rstrip()
        for extra in range(1, 6 if dated else 3):
            if i + extra >= len(lines):
                break
            nxt = lines[i + extra].strip()
            if not nxt:
                if dated:
                    continue
                break
            if is_quoted(nxt) and not _QUOTED_TAIL.match(nxt):
                break
            joined += " " + nxt
            if len(joined) < 300 and could_end_attribution(nxt) and _ATTRIBUTION.match(joined):
                return 1 + extra
    elif (
        i + 1 < len(lines)
        and _ADDRESS_FIRST.match(lines[i + 1])  # the cheap test first: it rarely holds
        and _NAME_ONLY.match(line)
        and could_end_attribution(lines[i + 1])
        and _ATTRIBUTION.match(f"{line.strip()} {lines[i + 1].strip()}")
    ):
        # Name-first attributions (Hungarian, Turkish, Chinese clients) wrapped before the
        # address: "Alice Example\n<alice@example.com> ezt írta (időpont: …):".
        return 2
    return 0


def could_end_attribution(text: str) -> bool:
    """A cheap test before the regular expressions: how every attribution line ends."""
    end = text.rstrip().lower()
    return end.endswith(_ENDINGS) or end.endswith(_VERBS)


def attribution_inside(line: str) -> int | None:
    """Where an attribution starts inside a line that begins with reply text, if it does."""
    if len(line) > 300 or not could_end_attribution(line):
        return None
    for match in _MID_OPENER.finditer(line):
        start = match.start(1)
        if start > 0 and _ATTRIBUTION.match(line[start:]):
            return start
    return None


def is_attribution(line: str) -> bool:
    """Whether one line reads as a quote header ("On <date>, Bob wrote:", "From: ...")."""
    if not may_start_quote([line], 0):  # neither a header nor a forward can start here
        return False
    return header_size([line], 0) > 0 or FORWARD.match(line) is not None


def _names_mail(block: list[str]) -> bool:
    return any("@" in line or _DATE_LINE.search(line) for line in block)


def _next_is_quoted(lines: list[str], i: int) -> bool:
    for line in lines[i + 1 : i + 3]:
        if line.strip():
            return is_quoted(line)
    return False


def _mentions_sender(line: str) -> bool:
    return "@" in line or bool(re.search(r"\d", line))


def _block_size(lines: list[str], i: int, needed: int = 2) -> int:
    """An Outlook block: a From: line and one more header field, or three fields in a row."""
    fields = 1
    j = i + 1
    while j < len(lines) and j - i <= 8:
        line = lines[j]
        if _HEADER_LINE.match(line):
            fields += 1
        elif not line.strip():
            break
        elif fields == 1 and j - i > 2:
            return 0
        j += 1
    return j - i if fields >= needed else 0
