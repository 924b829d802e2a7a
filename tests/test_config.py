"""Settings: defaults, TOML file, environment, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mailbot.config import Settings
from mailbot.redact import hide_secrets


def test_defaults_are_the_embedded_single_process_setup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("MAILBOT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert (settings.smtp_host, settings.smtp_port) == ("127.0.0.1", 2525)
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8025)
    home = tmp_path / "mailbot-data"  # state has a home, fixed as an absolute path
    assert settings.home_dir == home
    assert settings.database_url == f"sqlite+aiosqlite:///{home / 'mailbot.db'}"
    assert settings.domain == "localhost" and settings.relay is None
    assert settings.max_message_size == 25 * 1024 * 1024
    assert settings.should_migrate_on_start


def test_environment_overrides_the_toml_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    toml = tmp_path / "mailbot.toml"
    toml.write_text(
        'domain = "Reply.Example.org"\nsmtp_port = 2626\nrelay = "smtp://relay.example:25"\n'
    )
    monkeypatch.setenv("MAILBOT_CONFIG", str(toml))
    monkeypatch.setenv("MAILBOT_SMTP_PORT", "2727")
    settings = Settings()
    assert settings.domain == "reply.example.org"  # lower-cased
    assert settings.smtp_port == 2727
    assert settings.relay == "smtp://relay.example:25"


def test_a_bad_relay_url_is_refused_with_the_expected_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILBOT_RELAY", "relay.example:25")
    with pytest.raises(ValidationError, match="smtp://host:port"):
        Settings()


def test_unknown_settings_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "mailbot.toml"
    toml.write_text('domian = "typo.example"\n')
    monkeypatch.setenv("MAILBOT_CONFIG", str(toml))
    with pytest.raises(ValidationError, match="domian"):
        Settings()


@pytest.mark.parametrize("value", ["a.test, B.test", '["a.test", "B.test"]', "a.test,,b.test,"])
def test_extra_domains_come_as_a_comma_list_or_json(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MAILBOT_EXTRA_DOMAINS", value)
    assert Settings().extra_domains == ["a.test", "b.test"]


def test_a_password_in_any_url_or_secret_setting_is_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILBOT_RELAY", "smtp://mail:p%40ss@relay.example:587")
    monkeypatch.setenv("MAILBOT_WEBHOOK_SECRET", "whsec-123456")
    text = (
        "could not reach smtp://mail:p%40ss@relay.example:587 (p@ss), "
        "postgresql://bob:other@db/x, signed with whsec-123456"
    )
    shown = hide_secrets(text)
    for secret in ("p%40ss", "p@ss", "other", "whsec-123456"):
        assert secret not in shown, shown
    assert "smtp://mail:***@relay.example:587" in shown


def test_postgres_without_its_driver_says_how_to_get_it() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['asyncpg'] = None\n"  # as in a venv without the extra
        "from mailbot.store.db import make_engine\n"
        "try:\n    make_engine('postgresql+asyncpg://u@h/db')\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "ConfigError" in out and "pip install 'mailbot-server[postgres]'" in out


def test_a_settings_error_names_the_setting_and_never_the_values_given() -> None:
    # pydantic's own text repeats the input, cut short ("smtp://u:secre..."), where the
    # redaction of whole URLs cannot see it; the message is built without any input.
    from pydantic import ValidationError

    from mailbot.cli.common import settings_problems

    with pytest.raises(ValidationError) as refused:
        Settings(delivery="mx", relay="smtp://user:secretpassword@relay.example:25")
    text = settings_problems(refused.value)
    assert "secre" not in text and "user" not in text
    assert "MAILBOT_DELIVERY=mx sends without a relay" in text
