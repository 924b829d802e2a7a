"""The `mailbot` command as people and scripts use it: real subprocesses, real SMTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from email.utils import getaddresses
from pathlib import Path

import aiosmtplib

import mailbot
from mailbot.store.tokens import hash_token
from mailbot.testing import SmtpSink, build_mail

MAILBOT = [sys.executable, "-m", "mailbot"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(
        MAILBOT_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        MAILBOT_CPU_WORKERS="0",
        MAILBOT_CONFIG="",  # no mailbot.toml, wherever the tests run
        MAILBOT_DNS="offline",  # tests never ask the real DNS
    )
    env.update(extra)
    return env


async def _mailbot(env: dict[str, str], *args: str, ok: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        *MAILBOT, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if ok:
        assert proc.returncode == 0, (args, out.decode(), err.decode())
    else:
        assert proc.returncode != 0, (args, out.decode())
    return out.decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_reply_address_makes_the_conversation_and_a_new_address_each_time(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path, MAILBOT_DOMAIN="reply.example.org")
    first = (
        await _mailbot(env, "reply-address", "ticket-7", "Ann@Example.com", "--name", "Ann")
    ).strip()
    second = (await _mailbot(env, "reply-address", "ticket-7", "ann@example.com")).strip()
    assert first.startswith("reply+") and first.endswith("@reply.example.org")
    assert first != second
    shown = json.loads(await _mailbot(env, "conversation", "show", "ticket-7", "--json"))
    [ann] = shown["participants"]
    assert (ann["id"], ann["email"], ann["name"]) == (1, "ann@example.com", "Ann")
    # Both addresses are listed, newest first, by fingerprint and expiry, never themselves.
    assert [t["live"] for t in ann["tokens"]] == [True, True]
    assert [t["fingerprint"] for t in ann["tokens"]] == [
        hash_token(second.split("+")[1].split("@")[0])[:6],
        hash_token(first.split("+")[1].split("@")[0])[:6],
    ]
    assert first.split("@")[0].split("+")[1] not in json.dumps(shown)
    await _mailbot(env, "conversation", "show", "nope", ok=False)


async def test_notify_sends_through_the_relay_with_the_participants_reply_address(
    tmp_path: Path, sink: SmtpSink
) -> None:
    env = _env(tmp_path, MAILBOT_RELAY=sink.url)
    out = await _mailbot(
        env,
        "notify",
        "issue-9",
        "dev@example.com",
        "--subject",
        "Build broken",
        "--body",
        "main fails since 3f2a.",
        "--json",
    )
    assert json.loads(out)["status"] == "sent"
    [mail] = await sink.wait_for(1)
    msg = mail.message
    assert msg["Subject"] == "Build broken"
    assert "main fails since 3f2a." in mail.text
    assert getaddresses([msg["Reply-To"]])[0][1].startswith("reply+")
    assert msg["References"] and msg["Auto-Submitted"] == "auto-generated"


async def test_without_a_relay_notifications_are_held_and_listed(tmp_path: Path) -> None:
    env = _env(tmp_path)
    out = json.loads(
        await _mailbot(
            env, "notify", "k", "dev@example.com", "--subject", "S", "--body", "B", "--json"
        )
    )
    assert out["status"] == "held" and "MAILBOT_RELAY" in out["reason"]
    [listed] = [json.loads(line) for line in (await _mailbot(env, "outbox", "--json")).splitlines()]
    assert (listed["status"], listed["recipient"]) == ("held", "dev@example.com")


async def test_replay_runs_a_saved_message_through_the_pipeline(tmp_path: Path) -> None:
    env = _env(tmp_path)
    await _mailbot(env, "reply-address", "k", "bob@example.com")
    address = (await _mailbot(env, "reply-address", "k", "ann@example.com")).strip()
    eml = tmp_path / "reply.eml"
    eml.write_bytes(
        build_mail(
            "Ann <ann@example.com>",
            address,
            "Replayed reply.\n\nOn Mon, Bob <bob@example.com> wrote:\n> earlier\n",
        )
    )
    out = json.loads(await _mailbot(env, "replay", str(eml), "--to", address, "--json"))
    assert (out["status"], out["reply_text"], out["conversation"]) == (
        "delivered",
        "Replayed reply.",
        "k",
    )
    [item] = [json.loads(line) for line in (await _mailbot(env, "inbox", "--json")).splitlines()]
    assert set(item) >= {
        "id",
        "status",
        "reason",
        "envelope",
        "from",
        "subject",
        "reply_text",
        "signature",
        "conversation",
        "bot",
        "outcome",
    }
    assert item["from"] == [{"name": "Ann", "address": "ann@example.com"}]
    assert item["outcome"]["sent_to"] == ["bob@example.com"]
    refused = await _mailbot(env, "replay", str(eml), "--to", "reply+aaaa@localhost", ok=False)
    assert "550 5.1.1" in refused


async def test_serve_accepts_mail_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path, sink: SmtpSink
) -> None:
    smtp_port, http_port = _free_port(), _free_port()
    env = _env(
        tmp_path,
        MAILBOT_SMTP_PORT=str(smtp_port),
        MAILBOT_HTTP_PORT=str(http_port),
        MAILBOT_RELAY=sink.url,
    )
    await _mailbot(env, "reply-address", "k", "bob@example.com")
    address = (await _mailbot(env, "reply-address", "k", "ann@example.com")).strip()
    proc = await asyncio.create_subprocess_exec(
        *MAILBOT,
        "serve",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(60):
            while b"HTTP listening" not in await proc.stderr.readline():
                pass
        health = await _http_get(http_port, "/health")
        assert json.loads(health)["status"] == "ok"
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port, start_tls=False) as client:
            await client.sendmail(
                "ann@example.com", [address], build_mail("ann@example.com", address, "Via serve.")
            )
        [mail] = await sink.wait_for(1)
        assert "Via serve." in mail.text
        messages = json.loads(await _http_get(http_port, "/api/messages"))
        assert messages[0]["status"] == "delivered"
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            rest = await proc.stderr.read() if proc.stderr else b""
            code = await proc.wait()
    assert code == 0, rest.decode()
    assert b"Traceback" not in rest


async def _http_get(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body.decode()


async def test_api_tokens_are_made_shown_once_listed_by_name_and_revoked(tmp_path: Path) -> None:
    env = _env(tmp_path)
    token = (await _mailbot(env, "api-token", "create", "ci-bot")).strip()
    assert token.startswith("mbt_") and len(token) > 40
    listed = [json.loads(line) for line in (await _mailbot(env, "api-token", "list")).splitlines()]
    assert [(t["name"], t["revoked_at"]) for t in listed] == [("ci-bot", None)]
    assert token not in json.dumps(listed)
    await _mailbot(env, "api-token", "create", "ci-bot", ok=False)  # names are unique
    assert "revoked" in await _mailbot(env, "api-token", "revoke", "ci-bot")
    await _mailbot(env, "api-token", "revoke", "ci-bot", ok=False)


async def test_a_failing_command_says_why_in_one_line_and_never_shows_a_password(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path, MAILBOT_DATABASE_URL="postgresql+asyncpg://bob:s3cretpw@127.0.0.1:1/db")
    proc = await asyncio.create_subprocess_exec(
        *MAILBOT, "inbox", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 1
    assert len(err.decode().strip().splitlines()) == 1, err.decode()
    assert "Connect call failed" in err.decode() or "refused" in err.decode().lower()
    env["MAILBOT_DEBUG"] = "1"
    proc = await asyncio.create_subprocess_exec(
        *MAILBOT, "inbox", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out_debug, err_debug = await proc.communicate()
    assert "Traceback" in err_debug.decode()
    for text in (out, err, out_debug, err_debug):
        assert b"s3cretpw" not in text


async def test_bad_settings_are_named_and_exit_2(tmp_path: Path) -> None:
    for extra, expected in (
        ({"MAILBOT_SMTP_PORT": "99999"}, "smtp_port"),
        ({"MAILBOT_CONFIG": str(tmp_path / "missing.toml")}, "missing.toml"),
    ):
        proc = await asyncio.create_subprocess_exec(
            *MAILBOT,
            "inbox",
            env=_env(tmp_path, **extra),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _out, err = await proc.communicate()
        assert proc.returncode == 2 and expected in err.decode(), err.decode()
        assert "Traceback" not in err.decode()


async def test_a_misspelt_setting_is_warned_about_with_the_one_meant(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *MAILBOT,
        "bots",
        env=_env(tmp_path, MAILBOT_SMPT_PORT="2526"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await proc.communicate()
    assert proc.returncode == 0
    assert "MAILBOT_SMPT_PORT (did you mean MAILBOT_SMTP_PORT?)" in err.decode()


async def test_a_reply_address_for_a_bot_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    env = _env(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        *MAILBOT,
        *("reply-address", "k-1", "ann@example.com", "--bot", "nosuch"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 2 and not out
    assert "no bot named 'nosuch'" in err.decode() and "comments" in err.decode()
    # Nothing was made: the same key works with a bot that exists.
    made = await _mailbot(env, "reply-address", "k-1", "ann@example.com", "--bot", "comments")
    assert made.startswith("reply+")


async def test_bots_lists_each_bot_with_its_routes_and_commands(tmp_path: Path) -> None:
    env = _env(tmp_path)
    listed = [
        json.loads(line)
        for line in (
            await _mailbot(env, "bots", "--app", "mailbot.bots.tickets:app", "--json")
        ).splitlines()
    ]
    assert [(b["name"], b["routes"], b["default"]) for b in listed] == [
        ("comments", [], True),
        ("tickets", ["support@"], False),
    ]
    by_name = {c["name"]: c for c in listed[1]["commands"]}
    assert by_name["assign"] == {
        "name": "assign",
        "usage": "/assign @someone",
        "help": "hand the ticket to a participant",
        "who": "agent",
        "confirm": False,
    }
    text = await _mailbot(env, "bots")
    assert "comments" in text and "/unsubscribe" in text and "tickets" not in text
    assert not (tmp_path / "cli.db").exists()  # listing bots touches no database


async def test_reading_commands_in_an_empty_directory_say_so_and_leave_no_database(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path)
    for command in (["inbox"], ["outbox"], ["conversation", "show", "x"]):
        proc = await asyncio.create_subprocess_exec(
            *MAILBOT, *command, env=env, stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        assert proc.returncode == 2 and b"no database at" in err, (command, err)
    assert not (tmp_path / "cli.db").exists()


async def test_version_and_short_help(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert (await _mailbot(env, "--version")).strip() == f"mailbot {mailbot.__version__}"
    assert mailbot.__version__[0].isdigit()
    top = await _mailbot(env, "-h")
    assert "Usage: " in top and "inspector" in top and "``" not in top  # no raw RST markup
    assert "inspector new [OPTIONS]" in await _mailbot(env, "inspector", "new", "-h")


async def test_serve_help_names_each_flags_variable_and_real_default(tmp_path: Path) -> None:
    env = _env(tmp_path, COLUMNS="200")
    text = await _mailbot(env, "serve", "-h")
    assert "[default: None]" not in text
    for flag in ("MAILBOT_SMTP_PORT  [default: 2525]", "MAILBOT_HTTP_PORT  [default: 8025]"):
        assert flag in text, text
    assert "MAILBOT_DATABASE_URL  [default: mailbot.db in MAILBOT_HOME]" in text
    for command in (["notify"], ["inbox"], ["ingest"], ["outbox", "list"], ["purge"]):
        assert "[default: None]" not in await _mailbot(env, *command, "-h"), command
