"""DKIM signing of what we send: keys made by `mailbot dkim keygen` (RSA 2048 and Ed25519),
mail signed on its way to a real SMTP sink and verified by dkimpy against the record the
command printed; `mailbot dkim check` against published, wrong and missing records."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import dkim
import pytest
from dkim.crypto import RSASSA_PKCS1_v1_5_sign, parse_pem_private_key

from mailbot.bots.default import app
from mailbot.outbound import signing
from mailbot.serve import running
from mailbot.testing import SmtpSink, make_thread, reply, settings_for
from tests.test_cli import _env, _free_port, _mailbot


def _record(printed: str) -> tuple[str, str]:
    """(name, value) from keygen's "publish:" line, the zone file's strings joined."""
    found = re.search(r"publish:\s+(\S+)\.\s+TXT\s+(.*)", printed)
    assert found is not None, printed
    return found.group(1), "".join(re.findall(r'"([^"]*)"', found.group(2)))


def _verify(raw: bytes, name: str, value: str) -> bool:
    def dns(asked: bytes, timeout: int = 5) -> bytes | None:
        return value.encode() if asked.decode().rstrip(".") == name else None

    return bool(dkim.verify(raw, dnsfunc=dns))


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
async def test_notifications_carry_a_signature_the_printed_record_verifies(
    tmp_path: Path, sink: SmtpSink, algorithm: str
) -> None:
    env = _env(tmp_path, MAILBOT_HOME=str(tmp_path))
    printed = await _mailbot(env, "dkim", "keygen", "--selector", "mb1", "--algorithm", algorithm)
    key = tmp_path / "dkim" / "mb1.key"
    assert key.stat().st_mode & 0o777 == 0o600
    name, value = _record(printed)
    assert name == "mb1._domainkey.localhost" and f"k={algorithm}" in value
    port = _free_port()
    settings = settings_for(
        tmp_path,
        sink,
        dkim_key=key,
        dkim_selector="mb1",
        http_port=port,
        public_url=f"http://127.0.0.1:{port}",
    )
    async with running(settings, app, http=False) as node:
        thread = await make_thread(node, people=("ann", "bo"))
        await reply(node, "ann@example.com", thread.addresses["ann"], "Signed, please.")
        [told] = await sink.wait_for(1)
    signature = told.message["DKIM-Signature"]
    assert signature is not None and "d=localhost" in signature and "s=mb1" in signature
    signed = re.search(r"h=([^;]+)", "".join(signature.split()))
    assert signed is not None
    # RFC 8058: the one-click pair counts only under a signature; oversigned, so none can be added.
    assert signed.group(1).lower().count("list-unsubscribe-post") == 2
    assert signed.group(1).lower().split(":").count("cc") == 1  # absent, signed as absent
    assert "c=relaxed/relaxed" in "".join(signature.split())
    assert _verify(told.raw, name, value)
    forged = told.raw.replace(b"Subject: Re: ", b"Subject: RE: ", 1)
    assert forged != told.raw and not _verify(forged, name, value)


async def test_dkim_check_says_whether_dns_publishes_the_key(tmp_path: Path) -> None:
    env = _env(tmp_path, MAILBOT_HOME=str(tmp_path))
    printed = await _mailbot(env, "dkim", "keygen", "--selector", "s1", "--algorithm", "ed25519")
    name, value = _record(printed)
    await _mailbot(env, "dkim", "keygen", "--selector", "s1", ok=False)  # no overwrite
    env.update(MAILBOT_DKIM_KEY=str(tmp_path / "dkim" / "s1.key"), MAILBOT_DKIM_SELECTOR="s1")

    env["MAILBOT_DNS_ZONE"] = json.dumps({name: [f"TXT {value}"]})
    assert "matches the key" in await _mailbot(env, "dkim", "check")
    other = re.sub(r"p=\S+", "p=" + "A" * 43 + "=", value)
    env["MAILBOT_DNS_ZONE"] = json.dumps({name: [f"TXT {other}"]})
    assert "does not match the key" in await _mailbot(env, "dkim", "check", ok=False)
    env["MAILBOT_DNS_ZONE"] = "{}"
    missing = await _mailbot(env, "dkim", "check", ok=False)
    assert "no DKIM record" in missing and value in missing.replace('" "', "")


async def test_a_bad_key_file_stops_the_node_at_start_with_why(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    settings = settings_for(tmp_path, dkim_key=bad, dkim_selector="x")
    with pytest.raises(Exception, match="neither an RSA key"):
        async with running(settings, app, http=False):
            pass


@pytest.mark.parametrize("hash_name", ["sha256", "sha1"])
def test_openssl_rsa_signatures_are_dkimpys_own_byte_for_byte(hash_name: str) -> None:
    # signing.py hands dkimpy OpenSSL's RSA (dkimpy's pure-Python one holds the GIL for
    # 12 ms); PKCS#1 v1.5 is deterministic, so both must give exactly the same bytes.
    assert dkim.RSASSA_PKCS1_v1_5_sign is signing._rsa_sign  # in force for dkim.DKIM.sign
    private = parse_pem_private_key(signing.new_key("rsa"))
    for text in (b"", b"a header hash", bytes(range(256)) * 10):
        digest = hashlib.new(hash_name, text)
        assert signing._rsa_sign(digest, private) == RSASSA_PKCS1_v1_5_sign(digest, private)
