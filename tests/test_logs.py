"""What a node logs: one line per message and per outbound mail, as text or JSON lines,
never a live reply token, never a line a sender's CR or LF could split."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import pytest

from mailbot.logs import TEXT, JsonLines, Redacting
from mailbot.redact import fingerprint
from mailbot.serve import Node
from mailbot.store.tokens import mint_token
from mailbot.testing import SmtpSink, build_mail, make_thread, smtp_send, wait_for_status
from tests.test_cli import _env, _free_port, _mailbot

TOKEN = mint_token()


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("mailbot.test", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_text_lines_are_redacted_and_cannot_be_split_by_a_sender() -> None:
    line = Redacting(TEXT).format(
        _record("from %s to %s", "eve@x\r\n2026 INFO forged: line", f"reply+{TOKEN}@localhost")
    )
    assert "\n" not in line and "\r" not in line and "\\u000d\\u000a" in line
    assert TOKEN not in line and "reply+…" in line and "…" + fingerprint(TOKEN) in line


def test_json_lines_carry_the_extras_redacted() -> None:
    line = JsonLines().format(
        _record("inbound %s delivered", 7, inbound=7, status="delivered", ms=12.5, peer=TOKEN)
    )
    data = json.loads(line)
    assert (data["level"], data["logger"], data["inbound"], data["status"]) == (
        "info",
        "mailbot.test",
        7,
        "delivered",
    )
    assert data["message"] == "inbound 7 delivered" and TOKEN not in line


async def test_each_message_and_each_outbound_mail_is_one_log_line(
    node: Node, sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    thread = await make_thread(node, people=("ann", "bo"))
    address = thread.addresses["ann"]
    sent = await smtp_send(
        node.smtp_port, "ann@example.com", [address], build_mail("ann@example.com", address, "Hi")
    )
    await wait_for_status(node.sessions, sent.inbound_id)
    await sink.wait_for(1)
    for _ in range(100):
        if any(getattr(r, "outbound", None) for r in caplog.records):
            break
        await asyncio.sleep(0.05)
    [done] = [r for r in caplog.records if getattr(r, "inbound", None) == sent.inbound_id]
    assert (done.__dict__["status"], done.__dict__["bot"]) == ("delivered", "comments")
    assert "ann@example.com" in done.getMessage() and done.__dict__["ms"] >= 0
    [out] = [r for r in caplog.records if getattr(r, "outbound", None)]
    assert out.__dict__["status"] == "sent" and "bo@example.com" in out.getMessage()


async def test_serve_writes_json_lines_with_a_line_per_message_and_no_token(
    tmp_path: Path,
) -> None:
    port = _free_port()
    env = _env(
        tmp_path,
        MAILBOT_LOG_FORMAT="json",
        MAILBOT_SMTP_PORT=str(port),
        MAILBOT_HTTP_PORT=str(_free_port()),
        MAILBOT_HOME=str(tmp_path),
    )
    address = (await _mailbot(env, "reply-address", "k-1", "ann@example.com")).strip()
    token = address.split("+", 1)[1].split("@", 1)[0]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailbot", "serve", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    records: list[dict[str, object]] = []
    try:
        async with asyncio.timeout(90):
            while not any("HTTP listening" in str(r["message"]) for r in records):
                records.append(json.loads(await proc.stderr.readline()))
            raw = build_mail("ann@example.com", address, "Logged?")
            sent = await smtp_send(port, "ann@example.com", [address], raw)
            while not any(r.get("inbound") == sent.inbound_id for r in records):
                records.append(json.loads(await proc.stderr.readline()))
    finally:
        proc.terminate()
        await proc.wait()
    [line] = [r for r in records if r.get("inbound") == sent.inbound_id]
    assert (line["status"], line["level"], line["logger"]) == (
        "delivered",
        "info",
        "mailbot.pipeline.worker",
    )
    assert token not in json.dumps(records) and "reply+…" in str(line["message"])
