"""The strip stage: what the person wrote, without quote and signature, the quote kept.

Patterns come from real client output: the shared corpora's fixtures (read in place, never
copied) where they have one, and the shape each client's HTML and attribution line has.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mailbot.parse import parse
from mailbot.strip.html_text import html_to_text
from mailbot.strip.reply import strip

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
needs_corpora = pytest.mark.skipif(
    not CORPORA.is_dir(), reason=f"shared corpora not found at {CORPORA}"
)


def corpus_eml(name: str) -> tuple[str | None, str | None, str | None]:
    mail = parse((CORPORA / "mailgun_talon/inputs/standard_replies" / f"{name}.eml").read_bytes())
    return mail.text, mail.html, mail.sender


def corpus_text(path: str) -> str:
    return (CORPORA / path).read_text(encoding="utf-8")


# --- whole messages from real clients (parse + strip, the server's path) ---


@needs_corpora
@pytest.mark.parametrize(
    "client", ["gmail", "outlook", "thunderbird", "yahoo", "apple_mail", "hotmail", "aol"]
)
def test_reply_from_each_client_is_its_first_line_and_the_quote_is_kept(client: str) -> None:
    text, html, sender = corpus_eml(client)
    result = strip(text, html, sender)
    # Thunderbird's is written below the quote: the answer keeps the question (issue #14).
    assert result.reply == ("> Hi\n\nHello" if client == "thunderbird" else "Hello")
    assert result.quote  # the history is kept for "show quoted text"


@needs_corpora
def test_russian_android_attribution_wrapped_over_two_lines_is_cut() -> None:
    text, html, sender = corpus_eml("android")
    result = strip(text, html, sender)
    assert result.reply == "Hello"
    assert result.quote is not None and "написал" in result.quote


@needs_corpora
@pytest.mark.parametrize(
    "name", ["gmail", "thunderbird", "ms_outlook_2003", "ms_outlook_2010", "yandex_ru"]
)
def test_html_only_reply_is_clean_text_without_the_quote(name: str) -> None:
    html = corpus_text(f"mailgun_talon/inputs/html_replies/{name}.html")
    result = strip(None, html)
    assert result.reply_with_signature.startswith("Hi. I am fine.")
    assert "Thanks," in result.reply_with_signature
    assert "<" not in result.reply_with_signature
    assert "How are you" not in result.reply_with_signature
    assert result.quote is not None and "How are you" in result.quote


# --- HTML quote containers of each client ---


def test_gmail_quote_div_is_the_quote() -> None:
    html = (
        '<div dir="ltr">Sounds good, ship it.</div><br><div class="gmail_quote">'
        '<div dir="ltr" class="gmail_attr">On Mon, Jan 8, 2024 at 9:14 AM Bob &lt;'
        '<a href="mailto:bob@example.com">bob@example.com</a>&gt; wrote:<br></div>'
        '<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex">Can I deploy?'
        "</blockquote></div>"
    )
    result = strip(None, html)
    assert result.reply == "Sounds good, ship it."
    assert result.quote is not None and "Can I deploy?" in result.quote


def test_apple_mail_cite_blockquote_is_the_quote() -> None:
    html = (
        '<html><body>Yes, Thursday works.<br><div><br><blockquote type="cite">'
        "<div>On 8 Jan 2024, at 09:14, Bob &lt;bob@example.com&gt; wrote:</div><br>"
        "<div>Does Thursday work?</div></blockquote></div></body></html>"
    )
    assert strip(None, html).reply == "Yes, Thursday works."


def test_yahoo_quoted_div_is_the_quote() -> None:
    html = (
        '<div class="ydp1"><div>Got it, thanks!</div></div>'
        '<div id="yahoo_quoted_123" class="yahoo_quoted"><div>On Monday, January 8, 2024, '
        "09:14:00 AM GMT+1, Bob &lt;bob@example.com&gt; wrote:</div><div>Please confirm."
        "</div></div>"
    )
    result = strip(None, html)
    assert result.reply == "Got it, thanks!"
    assert result.quote is not None and "Please confirm." in result.quote


def test_thunderbird_cite_prefix_and_blockquote_are_the_quote() -> None:
    html = (
        "<html><body><p>Fixed in 1.2.3.</p>"
        '<div class="moz-cite-prefix">On 08/01/2024 09:14, Bob wrote:<br></div>'
        '<blockquote type="cite">The build is red.</blockquote></body></html>'
    )
    assert strip(None, html).reply == "Fixed in 1.2.3."


def test_outlook_divrplyfwdmsg_starts_the_quote_to_the_end() -> None:
    html = (
        '<div dir="ltr">Approved.</div><hr style="display:inline-block;width:98%">'
        '<div id="divRplyFwdMsg" dir="ltr"><b>From:</b> Bob &lt;bob@example.com&gt;<br>'
        "<b>Sent:</b> Monday, January 8, 2024 9:14 AM<br><b>To:</b> Alice<br>"
        "<b>Subject:</b> Budget</div><div>Please approve the budget.</div>"
    )
    result = strip(None, html)
    assert result.reply == "Approved."
    assert result.quote is not None and "Please approve the budget." in result.quote


def test_outlook_desktop_border_top_separator_starts_the_quote() -> None:
    html = (
        '<div class="WordSection1"><p class="MsoNormal">Done.</p>'
        '<div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm">'
        '<p class="MsoNormal"><b>From:</b> Bob<br><b>Sent:</b> Monday<br><b>Subject:</b> x</p>'
        '</div><p class="MsoNormal">Is it done?</p></div>'
    )
    assert strip(None, html).reply == "Done."


def test_html_lists_and_paragraphs_become_readable_lines() -> None:
    html = "<p>Two things:</p><ul><li>the <b>build</b></li><li>the docs</li></ul><p>Thanks</p>"
    assert html_to_text(html) == "Two things:\n\n- the build\n- the docs\n\nThanks"


def test_hostile_html_gives_text_not_an_exception() -> None:
    assert strip(None, "<<<>>><!-- <div").reply_with_signature is not None
    assert html_to_text('<?xml version="1.0" encoding="utf-8"?><p>hi</p>') == "hi"


def test_a_comment_never_shows_in_the_text_even_in_a_document_with_an_xml_declaration() -> None:
    # A body of nothing but a comment: lxml handed the comment back as the document itself.
    only = '<?xml version="1.0" encoding="utf-8"?><html><body><!-- secret --></body></html>'
    assert html_to_text(only) == ""
    assert html_to_text("<p>a<!-- one -->b<!-- two --></p>") == "ab"


def test_a_control_character_beside_a_removed_comment_does_not_lose_the_stripping() -> None:
    # lxml refuses such a character when it rebuilds the text around a dropped comment.
    assert html_to_text("<p>a<!-- c -->x\x0by\x1f</p>") == "axy"
    assert html_to_text("<p>a<style>s</style>x\x0by</p>") == "axy"  # a dropped element too
    stripped = strip(None, "<p>Yes<!-- c -->\x0b.</p><blockquote>the question</blockquote>")
    assert (stripped.reply, stripped.quote) == ("Yes.", "> the question")


# --- attribution lines in many languages, also broken in two ---


@pytest.mark.parametrize(
    "header",
    [
        "On Mon, Jan 8, 2024 at 9:14 AM Bob <bob@example.com> wrote:",
        "Am Mo., 8. Jan. 2024 um 09:14 Uhr schrieb Bob <bob@example.com>:",
        "Le lun. 8 janv. 2024 à 09:14, Bob <bob@example.com> a écrit :",
        "El lun, 8 ene 2024 a las 9:14, Bob (<bob@example.com>) escribió:",
        "Em seg., 8 de jan. de 2024 às 09:14, Bob <bob@example.com> escreveu:",
        "Il giorno lun 8 gen 2024 alle ore 09:14 Bob <bob@example.com> ha scritto:",
        "Op ma 8 jan. 2024 om 09:14 schreef Bob <bob@example.com>:",
        "Den mån 8 jan. 2024 kl 09:14 skrev Bob <bob@example.com>:",
        "pon., 8 sty 2024 o 09:14 Bob <bob@example.com> napisał(a):",
        "пн, 8 янв. 2024 г. в 09:14, Bob <bob@example.com>:",
        "8 января 2024 г., в 9:14, Bob <bob@example.com> написал(а):",
        "Bob <bob@example.com> 于2024年1月8日周一 09:14写道：",
        "2024年1月8日(月) 9:14 Bob <bob@example.com>:",
    ],
)
def test_attribution_line_in_each_language_starts_the_quote(header: str) -> None:
    result = strip(f"Done, see the PR.\n\n{header}\n\n> Can you fix it?\n", None)
    assert result.reply == "Done, see the PR."
    assert result.quote is not None and result.quote.startswith(header)


def test_attribution_wrapped_before_the_address_is_cut_whole() -> None:
    body = (
        ":+1:\n\nOn Tue, Sep 25, 2012 at 8:59 AM, Chris Wanstrath\n"
        "<notifications@github.com>wrote:\n\n> Steps 0-2 are in prod.\n"
    )
    assert strip(body, None).reply == ":+1:"


def test_attribution_wrapped_inside_the_address_brackets_is_cut_whole() -> None:
    body = (
        "Merci !\n\nLe 8 janv. 2024 à 09:14, Bob Martin <\nbob@example.com> a écrit :\n\n> Salut\n"
    )
    assert strip(body, None).reply == "Merci !"


def test_reply_on_the_same_line_as_the_attribution_is_kept() -> None:
    body = "reply On Wed, Apr 4, 2012 at 3:59 PM, bob@example.com wrote:\n> Hi"
    assert strip(body, None).reply == "reply"


# --- Outlook plain-text header blocks ---


def test_outlook_plain_header_block_in_german_starts_the_quote() -> None:
    body = (
        "Passt so.\n\nVon: Bob Muster <bob@example.com>\nGesendet: Montag, 8. Januar 2024 "
        "09:14\nAn: Alice <alice@example.com>\nBetreff: Angebot\n\nBitte prüfen.\n"
    )
    result = strip(body, None)
    assert result.reply == "Passt so."
    assert result.quote is not None and "Bitte prüfen." in result.quote


def test_original_message_separator_starts_the_quote() -> None:
    body = "Yes.\n\n-----Original Message-----\nFrom: Bob\nSent: Monday\n\nAre you in?"
    assert strip(body, None).reply == "Yes."


def test_header_block_at_the_very_top_is_dropped_and_the_text_kept() -> None:
    body = (
        "Od: Jan Kowalski <jan.kowalski@example.com>\nWysłano: środa, 1 marca 2023 12:00\n"
        "Temat: Test email\n\nCześć Anno,\n\nJak się masz?\n"
    )
    assert strip(body, None).reply == "Cześć Anno,\n\nJak się masz?"


# --- signatures ---


@pytest.mark.parametrize(
    "footer",
    [
        "Sent from my iPhone",
        "Get Outlook for Android",
        "Sent from Mail for Windows 10",
        "Von meinem iPhone gesendet",
        "Envoyé de mon iPhone",
    ],
)
def test_mobile_footer_is_a_signature(footer: str) -> None:
    result = strip(f"On my way.\n\n{footer}", None)
    assert result.reply == "On my way."
    assert result.signature == footer
    assert result.reply_with_signature.endswith(footer)


def test_sent_from_inside_a_sentence_is_text() -> None:
    body = "Here is another email\n\nSent from my desk, is much easier than my mobile phone."
    assert strip(body, None).reply == body


def test_dash_dash_delimiter_starts_the_signature() -> None:
    result = strip("Looks right.\n\n-- \nrick\nhttps://example.com", None)
    assert result.reply == "Looks right."
    assert result.signature is not None and result.signature.startswith("--")


def test_a_signoff_and_its_name_stay_in_the_reply_in_other_languages() -> None:
    text = "Tak for din mail. Det lyder godt.\n\nMed venlig hilsen\nAnders Andersen"
    result = strip(text, None)
    assert result.reply == text
    assert result.signature is None and result.signoff == "Med venlig hilsen\nAnders Andersen"


@pytest.mark.parametrize(
    "signoff", ["Thanks,", "Best regards,\nJef", "Cheers, Jef", "Pozdrawiam,\nJan"]
)
def test_a_signoff_belongs_to_the_message_and_only_the_block_below_is_the_signature(
    signoff: str,
) -> None:
    body = (
        f"The fix works here.\n\n{signoff}\nHead of Operations\nACME GmbH\n"
        "Tel. +49 30 1234567\nhttps://acme.example\n"
    )
    result = strip(body, None)
    assert result.reply == f"The fix works here.\n\n{signoff}"
    assert result.signature is not None and result.signature.startswith("Head of Operations")
    assert result.reply_with_signature == body.strip()
    assert any(c.part == "signature" and c.decided for c in result.cuts)


def test_a_mobile_footer_below_a_signoff_is_the_signature() -> None:
    result = strip("On my way.\n\nThanks,\nJef\n\nSent from my iPhone", None)
    assert result.reply == "On my way.\n\nThanks,\nJef"
    assert result.signature == "Sent from my iPhone"


def test_mailing_list_footer_is_not_part_of_the_reply() -> None:
    body = (
        "Having the function would be great.\n\n-Abhishek Kona\n\n"
        "_______________________________________________\nriak-users mailing list\n"
        "riak-users@lists.basho.com\nhttp://lists.basho.com/mailman/listinfo/riak-users\n"
    )
    assert strip(body, None).reply == "Having the function would be great."


def test_antispam_footer_never_leaves_an_empty_comment() -> None:
    body = (
        "__________________________________________\n"
        "This email has been scanned for viruses by ExampleGuard.\n"
    )
    result = strip(body, None)
    assert result.reply == body.strip()  # nothing else was written: keep it all


def test_disclaimer_after_a_short_reply_keeps_the_reply() -> None:
    body = (
        "Ok.\n\n-- \nCONFIDENTIALITY NOTICE: This e-mail is intended only for the named "
        "recipient.\n"
    )
    assert strip(body, None).reply == "Ok."


# --- the failures users of other systems complain about ---


def test_reply_written_below_the_quote_keeps_the_question_it_answers() -> None:
    body = (
        "On Mon, Jan 8, 2024 at 9:14 AM Bob <bob@example.com> wrote:\n"
        "> Does the fix work for you?\n\nYes, it works on my machine too.\n"
    )
    result = strip(body, None)
    assert result.reply == "> Does the fix work for you?\n\nYes, it works on my machine too."
    assert result.quote is not None and "Does the fix work" in result.quote


def test_inline_answers_stay_below_their_quoted_questions_as_markdown() -> None:
    body = (
        "On Tue, Apr 29, 2014 at 4:22 PM, Dev <dev@example.com> wrote:\n\n> one?\n"
        "I will reply under this one\n\n>\n> okay?\n>\nand under this.\n\n"
        "> And a last question nobody answered\n"
    )
    result = strip(body, None)
    assert result.reply == "> one?\n\nI will reply under this one\n\n> okay?\n\nand under this."
    assert result.quote is not None and "nobody answered" in result.quote


def test_a_quote_followed_only_by_a_signoff_or_signature_is_a_trailing_quote() -> None:
    for tail in ("Regards, Roman", "-- \nRoman Tkachenko\nACME", "Sent from my iPhone"):
        body = f"Test reply\n\nOn Mon, Bob <bob@example.com> wrote:\n> Test.\n\n{tail}\n"
        assert ">" not in strip(body, None).reply, tail


@pytest.mark.parametrize("rule", ["---", "-----", "***", "###", "* * *"])
def test_rule_line_inside_the_reply_does_not_cut_what_follows(rule: str) -> None:
    body = f"First part.\n\n{rule}\n\nSecond part, still mine.\n\nOn Mon, Bob <b@x.org> wrote:\n> q"
    assert strip(body, None).reply == f"First part.\n\n{rule}\n\nSecond part, still mine."


def test_bullets_and_non_ascii_text_are_kept_whole() -> None:
    body = (
        "Zwei Punkte:\n\n* Größe prüfen\n* Übersetzung ergänzen — 日本語も\n- und ein Dash\n\n"
        "Am 8. Jan. 2024 um 09:14 schrieb Bob <bob@example.com>:\n> Was fehlt?\n"
    )
    assert strip(body, None).reply == (
        "Zwei Punkte:\n\n* Größe prüfen\n* Übersetzung ergänzen — 日本語も\n- und ein Dash"
    )


def test_text_after_a_colon_is_kept() -> None:
    body = (
        "Invitation for an interview:\n\nDate: Wednesday 3, October 2011\nTime: 7 : 00am\n"
        "Address: 130 Fox St\n\nPlease bring in your ID."
    )
    assert strip(body, None).reply == body


@pytest.mark.parametrize(
    "separator",
    [
        "---------- Forwarded message ---------",
        "Begin forwarded message:",
        "-------- Weitergeleitete Nachricht --------",
    ],
)
def test_a_forward_inside_a_reply_is_kept_apart_as_the_quote(separator: str) -> None:
    forward = (
        f"{separator}\nFrom: bob@example.com\nDate: Tue, Sep 4, 2012 at 1:35 PM\n"
        "Subject: Two\nTo: rob@example.com\n\nText"
    )
    result = strip(f"FYI, see below.\n\n{forward}\n", None)
    assert result.reply == "FYI, see below."
    assert result.quote == forward
    assert [c.rule for c in result.cuts if c.part == "quote"] == ["forward"]


def test_a_forward_with_nothing_above_it_is_the_content() -> None:
    body = "---------- Forwarded message ----------\nFrom: bob@example.com\n\nText\n"
    assert strip(body, None).reply == body.strip()


def test_quote_only_message_keeps_the_quote() -> None:
    result = strip("On Mon, Bob <bob@example.com> wrote:\n> just the quote\n", None)
    assert result.reply == ""
    assert result.quote == "On Mon, Bob <bob@example.com> wrote:\n> just the quote"


def test_arrow_decoration_is_not_a_quote() -> None:
    body = "Visit us now\n>>> >>>  http://www.example.com <<<\nVisit our site"
    assert strip(body, None).reply == body


def test_long_rule_above_contact_lines_starts_the_signature() -> None:
    body = "Thanks.\n\n----------------\nJohn Doe\nt. 555-931-0702\nhttp://example.com/"
    result = strip(body, None)
    assert result.reply == "Thanks."
    assert result.signature is not None and "555-931-0702" in result.signature


def test_long_rule_above_more_prose_is_text() -> None:
    body = "Part one.\n\n----------------\n\nPart two goes on with a full sentence here."
    assert strip(body, None).reply == body


@pytest.mark.parametrize(
    "block",
    [
        "De : Bob Martin <bob@example.com>\nEnvoyé : lundi 8 janvier 2024 09:14\nÀ : Alice\n"
        "Objet : Devis",
        "De: Bob Martín <bob@example.com>\nEnviado el: lunes, 8 de enero de 2024 9:14\n"
        "Para: Alice\nAsunto: Presupuesto",
        "De: Bob <bob@example.com>\nEnviada em: segunda-feira, 8 de janeiro de 2024 09:14\n"
        "Para: Alice\nAssunto: Orçamento",
        "Da: Bob <bob@example.com>\nInviato: lunedì 8 gennaio 2024 09:14\nA: Alice\n"
        "Oggetto: Preventivo",
        "Van: Bob <bob@example.com>\nVerzonden: maandag 8 januari 2024 09:14\nAan: Alice\n"
        "Onderwerp: Offerte",
        "Från: Bob <bob@example.com>\nSkickat: den 8 januari 2024 09:14\nTill: Alice\nÄmne: Offert",
        "От: Bob <bob@example.com>\nОтправлено: 8 января 2024 г. 9:14\nКому: Alice\nТема: Счёт",
        "发件人: Bob <bob@example.com>\n发送时间: 2024年1月8日 9:14\n收件人: Alice\n主题: 报价",
        "差出人: Bob <bob@example.com>\n送信日時: 2024年1月8日 9:14\n宛先: Alice\n件名: 見積",
        "*From:* Bob <bob@example.com>\n*Sent:* Monday, January 8, 2024 9:14 AM\n"
        "*To:* Alice\n*Subject:* Quote",
    ],
)
def test_outlook_header_block_in_each_language_starts_the_quote(block: str) -> None:
    result = strip(f"Ok, agreed.\n\n{block}\n\nPlease confirm the quote.\n", None)
    assert result.reply == "Ok, agreed."
    assert result.quote is not None and "Please confirm the quote." in result.quote


def test_a_sender_made_of_regex_syntax_cannot_break_signature_detection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # talon compiles a sender with no name in it into a regex: "+++@(" does not compile, and
    # talon's classifier gave up on the message with a logged traceback (found by
    # tests/test_fuzz.py); a crafted sender could backtrack for minutes instead.
    with caplog.at_level(logging.DEBUG):
        result = strip("Hi, the fix works.\n\nThanks,\nBob\n", None, "+++@(")
    assert result.reply.startswith("Hi, the fix works.")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_an_html_table_is_read_row_by_row_with_its_cells_apart() -> None:
    html = (
        "<p>Here are the numbers:</p><table><tr><th>Item</th><th>Qty</th></tr>"
        "<tr><td>Apples</td><td>3</td></tr><tr><td>Pears</td><td>12</td></tr></table>"
    )
    assert html_to_text(html) == "Here are the numbers:\n\nItem | Qty\nApples | 3\nPears | 12"
    # A one-cell layout table (newsletters, Outlook) gets no separator.
    assert html_to_text("<table><tr><td>Just text</td></tr></table>") == "Just text"


def test_a_reply_longer_than_talons_1000_lines_is_kept_whole() -> None:
    # talon reads and returns only its first 1,000 lines; the rest is the person's text.
    body = "".join(f"Line {i} of a long report.\n" for i in range(1200))
    body += "Questions to carol@example.com please.\n"
    assert strip(body, None).reply == body.strip()


@pytest.mark.parametrize(
    ("header", "rule"),
    [
        ("On Mon, 7 Dec 2026 at 10:00, Bob <bob@example.com> wrote:", "header:en"),
        ("Am 07.12.2026 um 10:00 schrieb Bob <bob@example.com>:", "header:de"),
        ("Le lun. 7 déc. 2026 à 10:00, Bob <bob@example.com> a écrit :", "header:fr"),
        ("W dniu 7.12.2026 o 10:00, Bob <bob@example.com> pisze:", "header:pl"),
        ("2026-12-07 10:00 GMT+01:00 Bob <bob@example.com>:", "header:attribution"),
        ("-----Original Message-----", "separator:original-message"),
    ],
)
def test_each_quote_cut_names_its_rule_and_language_and_line(header: str, rule: str) -> None:
    result = strip(f"Done.\n\n{header}\n> Is it done?\n", None)
    assert result.reply == "Done."
    [cut] = [c for c in result.cuts if c.part == "quote"]
    assert (cut.rule, cut.line, cut.decided) == (rule, 2, True)


def test_what_shows_nothing_goes_and_the_text_after_each_stays() -> None:
    styled = "".join(f"<style>p{{margin:{i}px}}</style>line {i}<br>" for i in range(2000))
    text = html_to_text(f"<div><script>x()</script>{styled}</div><title>t</title>after")
    assert text.split("\n")[:2] == ["line 0", "line 1"] and text.endswith("line 1999\nafter")
    assert "margin" not in text and "x()" not in text
