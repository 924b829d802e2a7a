"""``mailbot serve`` with the TLS flags, as a real process: the given pair on both ports."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiosmtplib

from mailbot.smtp.tls import SELF_SIGNED_CERT, ensure_self_signed
from mailbot.testing import settings_for
from tests.transport import trusting


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_uses_the_given_pair_for_starttls_and_the_implicit_tls_port(
    tmp_path: Path,
) -> None:
    cert, key = ensure_self_signed(tmp_path / "pki", settings_for(tmp_path, hostname="mx.test"))
    smtp_port, smtps_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(
        MAILBOT_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        MAILBOT_CPU_WORKERS="0",
        MAILBOT_CONFIG="",  # no mailbot.toml, wherever the tests run
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailbot", "serve",
        "--smtp-port", str(smtp_port), "--http-port", str(_free_port()),
        "--tls-cert", str(cert), "--tls-key", str(key), "--smtps-port", str(smtps_port),
        "--require-starttls",
        env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stderr is not None
    log = ""
    try:
        async with asyncio.timeout(60):
            while "implicit TLS listening" not in log:
                line = await process.stderr.readline()
                assert line, f"mailbot serve exited early:\n{log}"
                log += line.decode()
        assert re.search(rf"SMTP listening on 127\.0\.0\.1:{smtp_port} \(STARTTLS required\)", log)
        served = []
        for port, implicit in ((smtp_port, False), (smtps_port, True)):
            smtp = aiosmtplib.SMTP(
                hostname="127.0.0.1", port=port, use_tls=implicit, start_tls=False,
                tls_context=trusting(cert), timeout=10,
            )  # fmt: skip
            async with smtp:
                if not implicit:
                    await smtp.starttls()
                ssl_object = smtp.get_transport_info("ssl_object")
                served.append(ssl_object.getpeercert(binary_form=True))
        assert served[0] == served[1]
        assert not (tmp_path / SELF_SIGNED_CERT).exists()  # the given pair, none made
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
