"""The reply text of a mail: what the person wrote, without the quoted history and signature.

talon does the heavy lifting (quotation markers, its signature classifier). Two repairs make
it usable on a current Python stack, without forking it:

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
import sys
import threading
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stripped:
    reply: str  # the new text: no quote, no signature
    reply_with_signature: str  # the new text with its signature, before signature removal
    signature: str | None
    quote: str | None  # the quoted history, kept for a "show quoted text" view


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


def strip(text: str | None, html: str | None, sender: str | None = None) -> Stripped:
    """Split a mail body into reply, signature and quote. Prefers text/plain over HTML."""
    load_signature_model()
    body = text if text and text.strip() else html_to_text(html or "")
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    reply = _without_quote(body)
    quote = _rest_after(body, reply)
    without_sig, sig = _split_signature(reply, sender or "")
    return Stripped(
        reply=without_sig.strip(),
        reply_with_signature=reply.strip(),
        signature=sig,
        quote=quote,
    )


def _without_quote(body: str) -> str:
    from talon import quotations

    return str(quotations.extract_from_plain(body))


def _rest_after(body: str, reply: str) -> str | None:
    """The quoted part: what follows the reply in the original body."""
    stripped = body.strip()
    if not reply:
        return stripped or None
    if stripped.startswith(reply):
        rest = stripped[len(reply) :].strip()
        return rest or None
    return stripped if stripped != reply else None


def _split_signature(reply: str, sender: str) -> tuple[str, str | None]:
    from talon.signature.bruteforce import extract_signature

    text, sig = extract_signature(reply)
    if sig:
        return str(text), str(sig)
    if _model is not None and _model.ok:
        from talon.signature import extract

        text, sig = extract(reply, sender)
        if sig:
            return str(text), str(sig)
    return reply, None


def html_to_text(html: str) -> str:
    """Readable text from an HTML body, quotes marked with ``>`` so the text rules see them."""
    if not html.strip():
        return ""
    from lxml import html as lxml_html

    try:
        tree = lxml_html.fromstring(html)
    except Exception:  # noqa: BLE001 - lxml raises several types on hostile markup
        return ""
    for bad in tree.xpath("//script|//style|//head"):
        bad.drop_tree()
    lines: list[str] = []
    _render(tree, lines, depth=0)
    text = "\n".join(line.strip() for line in "".join(lines).split("\n"))
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip()


_BLOCK = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "hr", "pre"}


def _render(el: Any, out: list[str], depth: int) -> None:
    tag = el.tag if isinstance(el.tag, str) else ""
    if tag == "blockquote":
        inner: list[str] = []
        for child in el:
            _render(child, inner, depth)
        text = ((el.text or "") + "".join(inner)).strip("\n")
        out.append("\n" + "\n".join("> " + line for line in text.split("\n")) + "\n")
        if el.tail:
            out.append(el.tail)
        return
    if tag in _BLOCK:
        out.append("\n")
    if tag == "li":
        out.append("- ")
    if el.text and tag not in ("script", "style"):
        out.append(_squash(el.text))
    for child in el:
        _render(child, out, depth)
    if tag in _BLOCK and tag != "br":
        out.append("\n")
    if el.tail:
        out.append(_squash(el.tail))


def _squash(text: str) -> str:
    """HTML white space rules: any run of white space is one space."""
    core = " ".join(text.split())
    if not core:
        return " " if text else ""
    return (" " if text[0].isspace() else "") + core + (" " if text[-1].isspace() else "")
