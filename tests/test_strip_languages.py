"""Quote headers in the languages added for issue #14, written for these tests (the dates,
names and layouts of each language's common clients): attributions, also wrapped before the
address, and Outlook field blocks. Each reply must keep exactly the person's line."""

from __future__ import annotations

import pytest

from mailbot.strip.reply import strip

OWN = "Sounds good, I will check it."
QUOTE = "> The build fails on ARM since the last release.\n> Can someone look?\n"
RLM, LRE, RLE, PDF = "\u200f", "\u202a", "\u202b", "\u202c"

ATTRIBUTIONS = {
    "finnish": "la 28. marrask. 2026 klo 10.21 Alice Example <alice@example.com> kirjoitti:",
    "hungarian": (
        "Alice Example <alice@example.com> ezt írta (időpont: 2026. nov. 28., Szo, 10:21):"
    ),
    "romanian": "Pe sâm., 28 nov. 2026 la 10:21, Alice Example <alice@example.com> a scris:",
    "turkish": "Alice Example <alice@example.com>, 28 Kas 2026 Cmt, 10:21 tarihinde şunu yazdı:",
    "greek": "Στις Σάβ 28 Νοε 2026 στις 10:21, ο/η Alice Example <alice@example.com> έγραψε:",
    # Right to left, with the direction marks the client wraps around name and address.
    "hebrew": (
        f"{RLE}בתאריך יום ש׳, 28 בנוב׳ 2026 ב-10:21 מאת {LRE}Alice Example{PDF}{RLM} "
        f"<{LRE}alice@example.com{PDF}{RLM}>:{PDF}"
    ),
    "arabic": "في السبت، 28 نوفمبر 2026 في 10:21 ص، كتب Alice Example <alice@example.com>:",
    "thai": "เมื่อ วันเสาร์ที่ 28 พ.ย. 2026 10:21 Alice Example <alice@example.com> เขียนว่า:",
    "vietnamese": (
        "Vào Th 7, 28 thg 11, 2026 vào lúc 10:21 Alice Example <alice@example.com> đã viết:"
    ),
    "indonesian": (
        "Pada tanggal Sab, 28 Nov 2026 pukul 10.21 Alice Example <alice@example.com> menulis:"
    ),
    "ukrainian": "сб, 28 лист. 2026 р. о 10:21 Alice Example <alice@example.com> написав(ла):",
    "czech": "so 28. 11. 2026 v 10:21 odesílatel Alice Example <alice@example.com> napsal:",
    "korean": "2026년 11월 28일 (토) 오전 10:21, Alice Example <alice@example.com>님이 작성:",
    "chinese": "Alice Example <alice@example.com> 于2026年11月28日周六 10:21写道：",
}

FIELDS = {
    "finnish": ("Lähettäjä", "Lähetetty", "Vastaanottaja", "Aihe"),
    "hungarian": ("Feladó", "Elküldve", "Címzett", "Tárgy"),
    "romanian": ("De la", "Trimis", "Către", "Subiect"),
    "turkish": ("Kimden", "Gönderildi", "Kime", "Konu"),
    "greek": ("Από", "Αποστολή", "Προς", "Θέμα"),
    "hebrew": ("מאת", "נשלח", "אל", "נושא"),
    "arabic": ("من", "تاريخ الإرسال", "إلى", "الموضوع"),
    "thai": ("จาก", "ส่ง", "ถึง", "เรื่อง"),
    "vietnamese": ("Từ", "Đã gửi", "Đến", "Chủ đề"),
    "indonesian": ("Dari", "Dikirim", "Kepada", "Subjek"),
    "czech": ("Od", "Odesláno", "Komu", "Předmět"),
}


def _wrapped(line: str) -> str:
    """The attribution broken before the address, as clients wrap at 76 columns."""
    cut = line.find("<")
    return f"{line[:cut].rstrip()}\n{line[cut:]}" if cut > 0 else line


@pytest.mark.parametrize("language", sorted(ATTRIBUTIONS))
@pytest.mark.parametrize("wrap", [False, True])
def test_an_attribution_line_starts_the_quote(language: str, wrap: bool) -> None:
    header = ATTRIBUTIONS[language]
    body = f"{OWN}\n\n{_wrapped(header) if wrap else header}\n{QUOTE}"
    stripped = strip(body, None, "bob@example.com")
    assert stripped.reply == OWN
    assert stripped.quote is not None and "ARM" in stripped.quote


@pytest.mark.parametrize("language", sorted(FIELDS))
def test_an_outlook_field_block_starts_the_quote(language: str) -> None:
    sender, sent, to, subject = FIELDS[language]
    body = (
        f"{OWN}\n\n{sender}: Alice Example <alice@example.com>\n{sent}: 28.11.2026 10:21\n"
        f"{to}: Bob <bob@example.com>\n{subject}: Re: build\n\n"
        "The build fails on ARM since the last release.\n"
    )
    stripped = strip(body, None, "bob@example.com")
    assert stripped.reply == OWN
    assert stripped.quote is not None and stripped.quote.startswith(f"{sender}:")


def test_direction_marks_in_the_persons_own_text_do_not_hide_their_words() -> None:
    body = f"{RLM}שלום, אבדוק את זה{RLM}\n\n{ATTRIBUTIONS['hebrew']}\n{QUOTE}"
    assert strip(body, None, "bob@example.com").reply == "שלום, אבדוק את זה"


FOOTERS = [
    "Get Outlook for iOS<https://aka.ms/o0ukef>",
    "Outlook für Android herunterladen <https://aka.ms/AAb9ysg>",
    "Obtenir Outlook pour Android",
    "Sent from Yahoo Mail on Android",
    "Sent from TypeApp",
    "Envoyé de mon iPhone",
    "Von meinem iPad gesendet",
    "Enviado desde mi Samsung Galaxy",
    "Verstuurd vanaf mijn iPhone",
    "Lähetetty iPhonesta",
    "iPhone-ról küldve",
    "Trimis de pe iPhone-ul meu",
    "iPhone'umdan gönderildi",
    "Στάλθηκε από το iPhone μου",
    "Odesláno z iPhonu",
    "Отправлено с iPhone",
    "Надіслано з iPhone",
    "נשלח מה-iPhone שלי",
    "أرسلت من الـ iPhone الخاص بي",
    "Được gửi từ iPhone của tôi",
    "Dikirim dari iPhone saya",
    "ส่งจาก iPhone ของฉัน",
    "나의 iPhone에서 보냄",
    "iPhoneから送信",
]


@pytest.mark.parametrize("footer", FOOTERS)
def test_a_mobile_or_app_footer_is_the_signature(footer: str) -> None:
    stripped = strip(f"{OWN}\n\n{footer}\n", None, "bob@example.com")
    assert stripped.reply == OWN
    assert stripped.signature is not None and footer.split("<")[0].strip() in stripped.signature


def test_a_sentence_that_starts_like_a_footer_inside_the_text_is_kept() -> None:
    body = "Sent from the build server, the log shows the linker failing.\nSee the attachment."
    assert strip(body, None, "bob@example.com").reply == body


@pytest.mark.parametrize(
    "block",
    ["Dari: Jakarta\nKe: Bali\nTanggal: besok", "من: القاهرة\nإلى: دبي", "מאת: תל אביב\nאל: אילת"],
)
def test_a_travel_plan_in_field_form_is_not_a_quote_header(block: str) -> None:
    body = f"Here is the plan.\n\n{block}\n"
    assert strip(body, None, "bob@example.com").reply == body.strip()


@pytest.mark.parametrize(
    "last",
    ["Paket dün depodan gönderildi", "Dikirim dari gudang Jakarta besok", "נשלח מחר בבוקר"],
)
def test_a_sentence_about_sending_something_is_not_a_mobile_footer(last: str) -> None:
    body = f"The parcel is on its way.\n\n{last}"
    assert strip(body, None, "bob@example.com").reply == body
