"""talon's signature classifier: really retrained on this scikit-learn, and a loud fallback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailbot.strip import reply as strip_module
from mailbot.strip.reply import load_signature_model, signature_model, strip

# A signature without "--", sign-off or mobile footer: only a classifier sees it.
NO_DELIMITER = (
    "Hi Bob,\n\nThe deploy is done, all green.\n\n"
    "John Doe\nSenior Engineer | Acme Inc.\n+1 (555) 123-4567\nwww.acme.com"
)


@pytest.fixture
def fresh_model() -> Iterator[None]:
    """Forget the process-wide model around a test, and restore it afterwards."""
    saved = strip_module._model
    strip_module._model = None
    try:
        yield
    finally:
        strip_module._model = saved


def test_signature_model_is_trained_and_finds_what_brute_force_misses() -> None:
    model = load_signature_model()
    assert model.ok, model.detail
    from talon.signature import extract
    from talon.signature.bruteforce import extract_signature

    assert extract_signature(NO_DELIMITER)[1] is None  # talon's rules alone miss it
    assert extract(NO_DELIMITER, "john@acme.com")[1] is not None
    result = strip(NO_DELIMITER, None, "john@acme.com")
    assert result.reply == "Hi Bob,\n\nThe deploy is done, all green."
    assert result.signature is not None and result.signature.startswith("John Doe")


def test_training_failure_falls_back_to_rules_and_says_why(
    fresh_model: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from talon.signature.learning import classifier

    def broken(*args: object) -> None:
        raise RuntimeError("no training data")

    monkeypatch.setattr(classifier, "train", broken)
    model = signature_model()
    assert not model.ok
    assert "no training data" in model.detail
    # Stripping goes on with the rules: quotes and "--" signatures still go.
    result = strip("Fine.\n\n-- \nBob\n\nOn Mon, Bob <bob@example.com> wrote:\n> q", None)
    assert result.reply == "Fine."
    assert strip(NO_DELIMITER, None, "john@acme.com").signature is None
