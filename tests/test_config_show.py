"""Settings in one place: `mailbot config show` (every field, its value, source and env
name, secrets hidden), `config check`, and docs/settings.md generated from the model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from mailbot.cli.configuring import described, markdown
from mailbot.config import Settings
from tests.test_cli import MAILBOT, _env, _mailbot

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_has_words_and_the_docs_are_what_the_model_says() -> None:
    words = described()
    assert [name for name in Settings.model_fields if not words.get(name)] == []
    generated = markdown(Settings.model_construct())
    assert (ROOT / "docs" / "settings.md").read_text() == generated, (
        "docs/settings.md is stale: mailbot config show --markdown > docs/settings.md"
    )
    for name in Settings.model_fields:
        assert f"`MAILBOT_{name.upper()}`" in generated


async def test_config_show_lists_every_setting_with_its_source_and_no_secret(
    tmp_path: Path,
) -> None:
    toml = tmp_path / "mailbot.toml"
    toml.write_text('domain = "reply.example.org"\nrelay = "smtp://u:relaypw@relay.example:587"\n')
    env = _env(
        tmp_path,
        MAILBOT_CONFIG=str(toml),
        MAILBOT_API_TOKEN="tok-" + "s" * 20,
        MAILBOT_WEBHOOK_SECRET="hooksecret123",
        MAILBOT_DATABASE_URL="postgresql+asyncpg://bob:dbpw@db.example/mail",
        MAILBOT_WEBHOOK_URLS='["https://hook:hookurlpw@app.example/in"]',
        MAILBOT_MAILGUN_SIGNING_KEY="mailgunkey123",
        MAILBOT_POSTMARK_PASSWORD="postmarkpw" + "q" * 10,
    )
    out = await _mailbot(env, "config", "show", "--json")
    shown = {row["name"]: row for row in map(json.loads, out.splitlines())}
    assert set(shown) == set(Settings.model_fields)
    assert (shown["domain"]["value"], shown["domain"]["source"]) == (
        "reply.example.org",
        f"file {toml}",
    )
    assert shown["api_token"] == {**shown["api_token"], "value": "***", "source": "env"}
    assert shown["smtp_port"]["source"] == "default" and shown["smtp_port"]["env"] == (
        "MAILBOT_SMTP_PORT"
    )
    secrets = ("relaypw", "dbpw", "hooksecret123", "s" * 20, "hookurlpw", "mailgunkey123")
    for secret in (*secrets, "postmarkpw"):
        assert secret not in out
    text = await _mailbot(env, "config", "show", "--words")
    assert "MAILBOT_LOOP_MAX_REPLIES" in text and "bots answering each other" in text


async def test_config_check_says_what_is_wrong(tmp_path: Path) -> None:
    assert "fine" in await _mailbot(_env(tmp_path), "config", "check")
    bad = _env(
        tmp_path,
        MAILBOT_HTTP_HOST="0.0.0.0",
        MAILBOT_TLS_CERT=str(tmp_path / "nope.crt"),
        MAILBOT_DKIM_KEY=str(tmp_path / "nope.key"),
        MAILBOT_DKIM_SELECTOR="s1",
        MAILBOT_SMPT_PORT="25",
    )
    proc = await asyncio.create_subprocess_exec(
        *MAILBOT, "config", "check", env=bad,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    said = err.decode()
    assert proc.returncode == 1
    for expected in (
        "MAILBOT_SMPT_PORT (did you mean MAILBOT_SMTP_PORT?) is not a setting",
        "refusing to serve the HTTP API on 0.0.0.0",
        "tls_cert: no file",
        "tls_cert and tls_key go together",
    ):
        assert expected in said, said
