"""STARTTLS, implicit TLS and SMTP AUTH, over real TLS handshakes on loopback.

The clients verify the server's certificate against the pair the node made (or was given),
so a passing test also shows the certificate names the host it serves.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest
import pytest_asyncio

from mailbot.bots.default import app
from mailbot.errors import ConfigError
from mailbot.serve import Node, running
from mailbot.smtp.submitters import Submitters, hash_password
from mailbot.smtp.tls import SELF_SIGNED_CERT, SELF_SIGNED_KEY, ensure_self_signed
from mailbot.testing import build_mail, make_thread, settings_for, wait_for_status
from tests.transport import PASSWORD, client, trusting

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Node]:
    """One node for the module: STARTTLS, an implicit-TLS port, and one submitter."""
    settings = settings_for(
        tmp_path_factory.mktemp("tls"),
        smtps_port=0,
        smtp_users={"webapp": hash_password(PASSWORD)},
    )
    async with running(settings, app, http=False) as started:
        yield started


async def _send_to_a_token(node: Node, smtp: aiosmtplib.SMTP, key: str) -> int:
    thread = await make_thread(node, key=key)
    to = thread.addresses["alice"]
    reply = await smtp.sendmail(
        "alice@example.com", [to], build_mail("alice@example.com", to, "ok")
    )
    message = reply[1]
    return int(message.rsplit(" ", 1)[1])


async def test_starttls_is_offered_and_mail_over_it_is_stored_as_tls(node: Node) -> None:
    smtp = client(node)
    async with smtp:
        await smtp.ehlo()
        assert smtp.supports_extension("starttls")
        assert not smtp.supports_extension("auth")  # never offered in the clear
        await smtp.starttls()
        tls = smtp.get_transport_info("ssl_object")
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        await smtp.ehlo()
        assert not smtp.supports_extension("starttls")
        assert set(smtp.esmtp_extensions["auth"].split()) == {"PLAIN", "LOGIN"}
        inbound_id = await _send_to_a_token(node, smtp, "tls-1")
    row = await wait_for_status(node.sessions, inbound_id)
    assert (row.tls, row.auth_user) == (True, None)


async def test_mail_without_starttls_is_accepted_and_stored_as_plain(node: Node) -> None:
    smtp = client(node)
    async with smtp:
        inbound_id = await _send_to_a_token(node, smtp, "plain-1")
    row = await wait_for_status(node.sessions, inbound_id)
    assert (row.tls, row.auth_user) == (False, None)


@pytest.mark.parametrize("mechanism", ["plain", "login"])
async def test_auth_over_starttls_records_the_submitter(node: Node, mechanism: str) -> None:
    smtp = client(node)
    async with smtp:
        await smtp.starttls()
        await smtp.ehlo()
        login = smtp.auth_plain if mechanism == "plain" else smtp.auth_login
        response = await login("webapp", PASSWORD)
        assert (response.code, response.message.split()[0]) == (235, "2.7.0")
        inbound_id = await _send_to_a_token(node, smtp, f"auth-{mechanism}")
    row = await wait_for_status(node.sessions, inbound_id)
    assert (row.tls, row.auth_user) == (True, "webapp")


async def test_auth_in_the_clear_is_refused_before_any_password_is_checked(node: Node) -> None:
    smtp = client(node)
    credentials = base64.b64encode(f"\0webapp\0{PASSWORD}".encode()).decode()
    async with smtp:
        await smtp.ehlo()
        response = await smtp.execute_command(b"AUTH", b"PLAIN", credentials.encode())
        assert (response.code, response.message.split()[0]) == (538, "5.7.11")
        inbound_id = await _send_to_a_token(node, smtp, "clear-auth")
    row = await wait_for_status(node.sessions, inbound_id)
    assert row.auth_user is None


async def test_wrong_passwords_are_refused_and_the_third_closes_the_connection(
    node: Node,
) -> None:
    smtp = client(node)
    await smtp.connect()
    await smtp.starttls()
    await smtp.ehlo()
    for login, password in (("webapp", "wrong"), ("nobody", PASSWORD)):
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
            await smtp.auth_plain(login, password)
        assert (refused.value.code, refused.value.message.split()[0]) == (535, "5.7.8")
    with pytest.raises(aiosmtplib.SMTPResponseException) as last:
        await smtp.auth_plain("webapp", "still wrong")
    assert last.value.code == 421
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await smtp.noop()
    smtp.close()


async def test_implicit_tls_port_counts_as_tls_and_allows_auth(node: Node) -> None:
    assert node.smtps_port
    smtp = client(node, implicit=True)
    async with smtp:
        await smtp.ehlo()
        assert not smtp.supports_extension("starttls")  # already encrypted
        assert "PLAIN" in smtp.esmtp_extensions["auth"]
        await smtp.login("webapp", PASSWORD)
        inbound_id = await _send_to_a_token(node, smtp, "smtps-1")
    row = await wait_for_status(node.sessions, inbound_id)
    assert (row.tls, row.auth_user) == (True, "webapp")


async def test_swaks_submits_with_starttls_and_auth(node: Node) -> None:
    if shutil.which("swaks") is None:
        pytest.skip("swaks is not installed")
    thread = await make_thread(node, key="swaks-1")
    to = thread.addresses["bob"]
    process = await asyncio.create_subprocess_exec(
        "swaks", "--server", f"127.0.0.1:{node.smtp_port}", "--tls",
        "--auth", "PLAIN", "--auth-user", "webapp", "--auth-password", PASSWORD,
        "--from", "bob@example.com", "--to", to, "--header", "From: bob@example.com",
        "--body", "Sent by swaks.",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await asyncio.wait_for(process.communicate(), 30))[0].decode()
    assert process.returncode == 0, output
    assert "235 2.7.0" in output
    queued = [line for line in output.splitlines() if "queued as" in line]
    row = await wait_for_status(node.sessions, int(queued[0].rsplit(" ", 1)[1]))
    assert (row.tls, row.auth_user) == (True, "webapp")


async def test_require_starttls_refuses_mail_until_the_session_is_encrypted(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, require_starttls=True)
    async with running(settings, app, work=False, http=False) as started:
        smtp = client(started)
        async with smtp:
            await smtp.ehlo()
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
                await smtp.mail("alice@example.com")
            assert refused.value.code == 530
            await smtp.starttls()
            await smtp.ehlo()
            response = await smtp.mail("alice@example.com")
            assert response.code == 250


async def _served_certificate(node: Node) -> bytes:
    smtp = client(node)
    async with smtp:
        await smtp.starttls()
        der = smtp.get_transport_info("ssl_object").getpeercert(binary_form=True)
    assert isinstance(der, bytes)
    return der


async def test_self_signed_pair_is_made_on_first_start_and_kept(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    assert not (tmp_path / SELF_SIGNED_CERT).exists()
    async with running(settings, app, work=False, http=False) as first:
        served_first = await _served_certificate(first)
    assert (tmp_path / SELF_SIGNED_KEY).stat().st_mode & 0o777 == 0o600
    kept = (tmp_path / SELF_SIGNED_CERT).read_bytes()
    async with running(settings, app, work=False, http=False) as second:
        assert await _served_certificate(second) == served_first
    assert (tmp_path / SELF_SIGNED_CERT).read_bytes() == kept
    assert ssl.DER_cert_to_PEM_cert(served_first).encode().strip() == kept.strip()


async def test_configured_pair_is_served_and_no_self_signed_one_is_made(tmp_path: Path) -> None:
    elsewhere = tmp_path / "pki"
    theirs = settings_for(tmp_path, hostname="mx.example.test")
    cert, key = ensure_self_signed(elsewhere, theirs)
    data = tmp_path / "data"
    settings = settings_for(tmp_path, tls_cert=cert, tls_key=key, home=data)
    async with running(settings, app, work=False, http=False) as started:
        smtp = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=started.smtp_port, start_tls=False,
            tls_context=trusting(cert), timeout=10,
        )  # fmt: skip
        async with smtp:
            await smtp.starttls()
            der = smtp.get_transport_info("ssl_object").getpeercert(binary_form=True)
    assert ssl.DER_cert_to_PEM_cert(der).strip() == cert.read_text().strip()
    assert not (data / SELF_SIGNED_CERT).exists()


async def test_a_certificate_without_its_key_is_refused_at_start(tmp_path: Path) -> None:
    cert, _key = ensure_self_signed(tmp_path / "pki", settings_for(tmp_path))
    with pytest.raises(ConfigError, match="tls_key"):
        async with running(settings_for(tmp_path, tls_cert=cert), app, work=False, http=False):
            pass


async def test_smtp_password_prints_a_hash_that_verifies_and_never_the_password() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailbot", "smtp-password", "webapp",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(f"{PASSWORD}\n".encode() * 2), 30)
    assert process.returncode == 0, err.decode()
    line = out.decode().strip().splitlines()[-1]
    name, encoded = (json.loads(part) for part in line.split(" = "))
    assert name == "webapp" and PASSWORD not in out.decode()
    submitters = Submitters({name: encoded})
    assert await submitters.verify(b"webapp", PASSWORD.encode()) == "webapp"
    assert await submitters.verify(b"webapp", b"guess") is None


async def test_a_malformed_password_hash_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="webapp"):
        Submitters({"webapp": "hunter2"})
