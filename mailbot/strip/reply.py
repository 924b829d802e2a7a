"""The reply text of a mail: what the person wrote, without the quoted history and signature.

Three steps, each in its own module, each keeping more when unsure:

1. HTML-only mail becomes text (:mod:`mailbot.strip.html_text`), each client's quote container
   turned into ``>`` lines.
2. The quote is found by mailbot's rules (:mod:`mailbot.strip.quotes`: attribution lines in many
   languages, Outlook header blocks, separators, ``>`` blocks, with inline and bottom-posted
   answers kept and forwards left whole). Where they see no quote at all, talon's
   ``extract_from_plain`` gets the last word, unless what it would cut holds neither an
   address nor a ``>`` line (then it took a "Date:" line of the reply for a header).
3. The signature is the earliest of talon's brute-force rules (not at a Markdown rule or a
   list item), talon's classifier (only for a few lines) and :mod:`mailbot.strip.signatures`
   (mobile footers, sign-offs, list footers, "-- "), never at or after a forward and never
   the whole reply.

``mailbot eval-strip`` (:mod:`mailbot.strip.evaluate`) measures the result on the shared corpora.

talon's classifier needs two repairs on a current Python stack, without forking it:

- ``talon.signature`` imports ``sklearn.externals.joblib``, gone from scikit-learn; we point
  that name at the real ``joblib`` before the import.
- its pickled classifier no longer loads; we retrain the same ``LinearSVC(C=10.0)`` from the
  training data the wheel ships (about 0.1 s, once per process) instead.

If the retraining fails anyway, stripping carries on with talon's brute-force signature rules
and :func:`signature_model` says why, so the degradation is visible, never silent.

Nothing is thrown away: the quote and the signature are returned beside the reply.

>>> s = strip("Thanks, merged.\\n\\nOn Mon, 1 Jan 2024, Bob <bob@example.com> wrote:\\n> hi", None)
>>> s.reply, s.quote
('Thanks, merged.', 'On Mon, 1 Jan 2024, Bob <bob@example.com> wrote:\\n> hi')
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

from mailbot.strip import talon_plain
from mailbot.strip.html_text import html_to_text
from mailbot.strip.quotes import FORWARD, split_quote
from mailbot.strip.sent import cut_at_sent
from mailbot.strip.signatures import after_signoff, signature_starts

__all__ = ["Cut", "Stripped", "html_to_text", "load_signature_model", "signature_model", "strip"]

log = logging.getLogger(__name__)

_MODEL_MAX_LINES = 4
_SENTENCE = re.compile(r"\w+ \w+ \w+.*[.!?]$")
_LIST_ITEM = re.compile(r"^\s*([-*•]|\d{1,2}[.)])\s+\S")
# Direction marks, embeddings, overrides and isolates: invisible, and in right-to-left mail
# (Hebrew, Arabic clients) they wrap every name and address of a quote header. They are taken
# out before reading, so the rules see the words (and a reversed-text trick goes with them).
_BIDI_CONTROLS = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_RULE_LINE = re.compile(r"^\s*([-_=*#~])(\s?\1){2,}\s*$")


@dataclass(frozen=True)
class Cut:
    """A rule that saw a quote or a signature start, so a wrong cut is explained at a look."""

    part: str  # "quote" or "signature"
    rule: str  # short name: "sent-text", "header:attribution", "quote:>", "footer:mobile", …
    line: int  # quote: the line of the body; signature: the line of the reply (from 0)
    decided: bool  # whether this rule made the cut (the earliest), or only agreed later on


@dataclass(frozen=True)
class Stripped:
    reply: str  # the new text, its sign-off included: no quote, no signature
    reply_with_signature: str  # the new text with its signature, before signature removal
    signature: str | None
    quote: str | None  # the quoted history, kept for a "show quoted text" view
    quote_rule: str | None = None  # which rule cut the quote, in words
    signature_rule: str | None = None  # which rule cut the signature
    signoff: str | None = None  # "Thanks,\nJef" ending the reply, kept in it (issue #14)
    cuts: tuple[Cut, ...] = ()  # every rule that fired, and which decided


@dataclass(frozen=True)
class SignatureModel:
    ok: bool
    detail: str


_lock = threading.Lock()
_model: SignatureModel | None = None


def _talon_signature() -> ModuleType:
    """Import ``talon.signature`` on a scikit-learn that no longer ships ``externals.joblib``."""
    try:
        importlib.import_module("sklearn.externals.joblib")
    except ImportError:
        import joblib

        sys.modules["sklearn.externals.joblib"] = joblib
        importlib.import_module("sklearn.externals").joblib = joblib  # type: ignore[attr-defined]
    return importlib.import_module("talon.signature")


def load_signature_model() -> SignatureModel:
    """Train talon's signature classifier once per process; safe to call from any thread."""
    global _model
    with _lock:
        if _model is not None:
            return _model
        from talon import quotations

        quotations.register_xpath_extensions()
        try:
            signature = _talon_signature()
            from talon.signature.learning import classifier

            with warnings.catch_warnings():
                # LinearSVC warns about convergence on this small data set; the model is fine.
                warnings.simplefilter("ignore")
                model = classifier.train(classifier.init(), signature.EXTRACTOR_DATA)
            signature.extraction.EXTRACTOR = model
            _model = SignatureModel(True, f"talon LinearSVC retrained from {signature.DATA_DIR}")
        except Exception as exc:  # noqa: BLE001 - any failure means "fall back", said loudly
            log.warning("talon signature model unavailable, using brute-force rules: %s", exc)
            _model = SignatureModel(False, f"brute-force rules only: {exc!r}")
        return _model


def signature_model() -> SignatureModel:
    return load_signature_model()


def strip(
    text: str | None, html: str | None, sender: str | None = None, sent: Sequence[str] = ()
) -> Stripped:
    """Split a mail body into reply, signature and quote. Prefers text/plain over HTML.
    ``sent``: the texts of mails we sent this person; where one is quoted, that is the cut
    (:mod:`mailbot.strip.sent`), whatever the client or language; else the rules decide."""
    load_signature_model()
    body = text if text and text.strip() else html_to_text(html or "")
    body = _BIDI_CONTROLS.sub("", body.replace("\r\n", "\n").replace("\r", "\n"))
    ours = cut_at_sent(body, sent) if sent else None
    split = split_quote(body)
    quote_rule = split.rule
    quote: str | None
    cuts: list[Cut] = []
    if split.rule_id is not None and split.line is not None:
        cuts.append(Cut("quote", split.rule_id, split.line, ours is None))
    if ours is not None:
        reply, quote = ours.reply, ours.quote
        quote_rule = "the quoted text of the mail we sent"
        cuts.insert(0, Cut("quote", "sent-text", ours.line, True))
    elif split.found:
        reply, quote = split.reply, split.quote
    else:
        # No marker of ours: talon's own rules get the last word on what is left.
        reply = _without_quote(split.reply).strip("\n")
        quote = _rest_after(split.reply, reply)
        if quote and not _looks_like_history(quote):
            # talon took a "Date:" or "To:" line of the reply itself for a quote header
            # (its issue #129); without an address or a ">" line it is not history: keep it.
            reply, quote = split.reply.strip("\n"), None
        quote_rule = "talon's quotation rules" if quote else None
        if quote:
            cuts.append(Cut("quote", "talon:quotation", reply.count("\n") + 1, True))
    without_sig, sig, sig_rule, sig_cuts = _split_signature(reply, sender or "")
    kept = _trailing_signoff(without_sig, sig_cuts)
    return Stripped(
        reply=_without_trailing_quote(without_sig).strip(),
        reply_with_signature=reply.strip(),
        signature=sig,
        quote=quote,
        quote_rule=quote_rule,
        signature_rule=sig_rule,
        signoff=kept,
        cuts=(*cuts, *sig_cuts),
    )


def _trailing_signoff(reply: str, cuts: list[Cut]) -> str | None:
    """The sign-off lines a signature rule saw start and that stay, as the person's."""
    lines = reply.rstrip().split("\n")
    starts = [c.line for c in cuts if c.line < len(lines)]
    if not starts:
        return None
    first = min(starts)
    if after_signoff(lines, first) == first:
        return None
    return "\n".join(lines[first:]).strip() or None


def _without_trailing_quote(reply: str) -> str:
    """A quote the person answered with only a signature below is a trailing quote: it goes."""
    lines = reply.rstrip().split("\n")
    end = len(lines)
    while end > 0 and (lines[end - 1].lstrip().startswith(">") or not lines[end - 1].strip()):
        end -= 1
    return "\n".join(lines[:end]) if end < len(lines) and end > 0 else reply


def _only_contact_lines(lines: list[str]) -> bool:
    """After a long rule: names, titles, numbers, links; no sentence of the reply."""
    rule, *rest = [line.strip() for line in lines if line.strip()] or [""]
    if len(rule.replace(" ", "")) < 8:
        return False  # "---" or "***" is a Markdown rule inside the text
    return all(len(line) <= 50 and not _SENTENCE.search(line) for line in rest)


def _looks_like_history(quote: str) -> bool:
    return "@" in quote or any(line.lstrip().startswith(">") for line in quote.split("\n"))


# talon's "On … wrote:" splitter backtracks on one long line of attribution fragments that
# never says "wrote" (19 KB: seconds; 73 KB: minutes). Our own rules have run by then; a body
# with a line longer than this is kept whole rather than risk that (when unsure, keep more).
TALON_MAX_LINE = 2000
TALON_MAX_LINES = 1000  # talon's MAX_LINES_COUNT


def _without_quote(body: str) -> str:
    lines = body.split("\n")
    if any(len(line) > TALON_MAX_LINE for line in lines):
        return body
    # talon reads at most its first 1,000 lines and returns only those: past them it would
    # drop the person's own text as a "quote". It gets those lines; where it cuts nothing,
    # the whole body is the reply (and a long body costs talon no more than 1,000 lines).
    head = "\n".join(lines[:TALON_MAX_LINES])
    found = talon_plain.extract_from_plain(head)
    if len(lines) > TALON_MAX_LINES and found.strip() == head.strip():
        return body
    return found


def _rest_after(body: str, reply: str) -> str | None:
    """The quoted part: what follows the reply in the original body."""
    stripped = body.strip()
    if not reply:
        return stripped or None
    if stripped.startswith(reply.strip()):
        rest = stripped[len(reply.strip()) :].strip()
        return rest or None
    return stripped if stripped != reply.strip() else None


_NOT_ADDRESS = re.compile(r"[^\w.@-]")


def _regex_safe(sender: str) -> str:
    """talon compiles the sender into a regex when it finds no name in it: a From of
    ``(a+)+$@x`` would be a crafted regex (an error, or catastrophic backtracking). Only
    word characters, dots, ``@`` and ``-`` reach it: still the names it looks for."""
    return _NOT_ADDRESS.sub("", sender)


def _split_signature(reply: str, sender: str) -> tuple[str, str | None, str | None, list[Cut]]:
    """The earliest cut of talon's rules, talon's model and mailbot's own end-of-text rules,
    and which of them it was; a sign-off above it stays in the reply (issue #14)."""
    from talon.signature.bruteforce import extract_signature

    lines = reply.split("\n")
    cuts: list[tuple[int, str, str]] = []
    text, sig = extract_signature(reply)
    if sig:
        cut = len(str(text).rstrip("\n").split("\n"))
        # talon takes any dash line for "--"; a rule of ---, *** or ### inside a reply is text.
        first = next((line for line in lines[cut:] if line.strip()), "")
        before = next((line for line in reversed(lines[:cut]) if line.strip()), "")
        # ... and a "- item" after another list item is a bullet, not a signature.
        bullet = _LIST_ITEM.match(first) is not None and _LIST_ITEM.match(before) is not None
        if not bullet and (not _RULE_LINE.match(first) or _only_contact_lines(lines[cut:])):
            cuts.append((cut, "talon's signature rules", "talon:signature-rules"))
    if _model is not None and _model.ok:
        from talon.signature import extract

        text, sig = extract(reply, _regex_safe(sender))
        # The model sometimes takes an address or an agenda for a signature: trust it only
        # for a signature of a few lines, as signatures are.
        if sig and len([x for x in str(sig).split("\n") if x.strip()]) <= _MODEL_MAX_LINES:
            at = len(str(text).rstrip("\n").split("\n"))
            cuts.append((at, "talon's signature classifier", "talon:signature-model"))
    for at, name in signature_starts(lines):
        cuts.append((at, "mailbot's sign-off and footer rules", name))
    # A forward is content: no signature cut at or after its first line.
    forwards = list(map(FORWARD.match, lines))  # the lines in C, most bodies have none
    end = forwards.index(next(filter(None, forwards))) if any(forwards) else len(lines)
    cuts = [c for c in cuts if 0 < c[0] < end and any(line.strip() for line in lines[: c[0]])]
    if not cuts:
        return reply, None, None, []
    cuts.sort()
    earliest, why, _ = cuts[0]
    cut = after_signoff(lines, earliest)
    signature = "\n".join(lines[cut:]).strip() or None
    found = [
        Cut("signature", name, at, at == earliest and signature is not None) for at, _, name in cuts
    ]
    return "\n".join(lines[:cut]).rstrip(), signature, why if signature else None, found
