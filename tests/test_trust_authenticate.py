"""SPF, DKIM and DMARC, offline: real signatures made here, DNS answered from zone data."""

from __future__ import annotations

import dkim
import pytest

from mailbot.testing import build_mail
from mailbot.trust.authenticate import Authentication, authenticate, org_domain
from mailbot.trust.resolver import ZoneResolver
from tests.trust_support import new_keypair

IP_GOOD = "192.0.2.10"
IP_OTHER = "198.51.100.7"

Keys = dict[str, tuple[bytes, str]]  # name -> (PEM private key, DKIM TXT record)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return {"good": new_keypair(), "other": new_keypair()}


def sign(raw: bytes, key: bytes, domain: str = "example.org", selector: str = "s1") -> bytes:
    header: bytes = dkim.sign(
        raw, selector.encode(), domain.encode(), key, include_headers=[b"from", b"subject"]
    )
    return header + raw


def zone(keys: Keys, **extra: list[str]) -> dict[str, list[str]]:
    records = {
        "example.org": [f"TXT v=spf1 ip4:{IP_GOOD} -all"],
        "soft.example.org": [f"TXT v=spf1 ip4:{IP_GOOD} ~all"],
        "s1._domainkey.example.org": [keys["good"][1]],
        "_dmarc.example.org": ["TXT v=DMARC1; p=reject"],
        "relaxed.example": [f"TXT v=spf1 ip4:{IP_GOOD} -all"],
        "_dmarc.relaxed.example": ["TXT v=DMARC1; p=quarantine; sp=reject"],
        "s1._domainkey.relaxed.example": [keys["good"][1]],
        "_dmarc.strict.example": ["TXT v=DMARC1; p=reject; adkim=s; aspf=s"],
        "mail.strict.example": [f"TXT v=spf1 ip4:{IP_GOOD} -all"],
        "s1._domainkey.mail.strict.example": [keys["good"][1]],
    }
    records.update({k.replace("_", "."): v for k, v in extra.items()})
    return records


def run(
    raw: bytes,
    keys: Keys,
    *,
    ip: str = IP_GOOD,
    mail_from: str = "alice@example.org",
    from_domain: str = "example.org",
    records: dict[str, list[str]] | None = None,
) -> Authentication:
    return authenticate(
        raw,
        client_ip=ip,
        helo="mx.client.test",
        mail_from=mail_from,
        from_domain=from_domain,
        resolver=ZoneResolver(records if records is not None else zone(keys)),
        authserv_id="mx.mailbot.test",
    )


def mail(sender: str = "alice@example.org", body: str = "Looks good to me") -> bytes:
    return build_mail(sender, "reply+x@mailbot.test", body).replace(b"\n", b"\r\n")


# --- DKIM -----------------------------------------------------------------------------------


def test_good_signature_passes_and_aligns(keys: Keys) -> None:
    auth = run(sign(mail(), keys["good"][0]), keys, ip=IP_OTHER)
    assert [(s.domain, s.selector, s.result) for s in auth.dkim] == [("example.org", "s1", "pass")]
    assert auth.aligned_dkim_pass
    assert auth.dmarc == "pass"  # DKIM alone carries DMARC although SPF failed
    assert auth.spf == "fail"


def test_tampered_body_fails_dkim(keys: Keys) -> None:
    signed = sign(mail(body="Approve the merge"), keys["good"][0])
    tampered = signed.replace(b"Approve the merge", b"Reject the merge")
    auth = run(tampered, keys, ip=IP_OTHER)
    assert auth.dkim[0].result == "fail"
    assert "body hash mismatch" in auth.dkim[0].reason
    assert auth.dmarc == "fail"
    assert auth.dmarc_policy == "reject"


def test_signature_with_the_wrong_key_fails(keys: Keys) -> None:
    auth = run(sign(mail(), keys["other"][0]), keys, ip=IP_OTHER)
    assert auth.dkim[0].result == "fail"
    assert not auth.aligned_dkim_pass


def test_signature_whose_key_is_not_published_is_permerror(keys: Keys) -> None:
    auth = run(sign(mail(), keys["good"][0], selector="gone"), keys, ip=IP_OTHER)
    assert auth.dkim[0].result == "permerror"
    assert "no key" in auth.dkim[0].reason
    assert auth.dmarc == "fail"


def test_every_signature_is_checked(keys: Keys) -> None:
    twice = sign(
        sign(mail(), keys["other"][0], selector="s1"), keys["good"][0], domain="relaxed.example"
    )
    auth = run(twice, keys, ip=IP_OTHER)
    assert sorted((s.domain, s.result) for s in auth.dkim) == [
        ("example.org", "fail"),
        ("relaxed.example", "pass"),
    ]
    assert not auth.aligned_dkim_pass  # the valid one is not the From domain's
    assert auth.dmarc == "fail"


def test_unsigned_mail_reports_dkim_none(keys: Keys) -> None:
    auth = run(mail(), keys)
    assert auth.dkim == []
    assert "dkim=none" in auth.header


def test_dkim_key_lookup_timeout_is_temperror(keys: Keys) -> None:
    records = zone(keys)
    records["s1._domainkey.example.org"] = ["TXT TEMPFAIL"]
    auth = run(sign(mail(), keys["good"][0]), keys, ip=IP_OTHER, records=records)
    assert auth.dkim[0].result == "temperror"


# --- SPF ------------------------------------------------------------------------------------


def test_spf_pass_for_listed_ip(keys: Keys) -> None:
    auth = run(mail(), keys)
    assert (auth.spf, auth.spf_domain) == ("pass", "example.org")
    assert auth.aligned_spf_pass and auth.sender_verified


def test_spf_fail_for_other_ip(keys: Keys) -> None:
    auth = run(mail(), keys, ip=IP_OTHER)
    assert auth.spf == "fail"
    assert not auth.sender_verified


def test_spf_softfail(keys: Keys) -> None:
    auth = run(
        mail("bob@soft.example.org"),
        keys,
        ip=IP_OTHER,
        mail_from="bob@soft.example.org",
        from_domain="soft.example.org",
    )
    assert auth.spf == "softfail"


def test_spf_none_without_a_record(keys: Keys) -> None:
    auth = run(
        mail("carol@norecord.test"),
        keys,
        mail_from="carol@norecord.test",
        from_domain="norecord.test",
    )
    assert auth.spf == "none"
    assert auth.dmarc == "none"
    assert not auth.sender_verified


def test_spf_include_and_mx_mechanisms_resolve_through_the_zone(keys: Keys) -> None:
    records = zone(keys)
    records["inc.test"] = ["TXT v=spf1 include:_spf.provider.test -all"]
    records["_spf.provider.test"] = ["TXT v=spf1 mx -all"]
    records["provider.test"] = ["MX 10 mx.provider.test"]
    records["_spf.provider.test"] += ["MX 10 mx.provider.test"]
    records["mx.provider.test"] = [f"A {IP_GOOD}"]
    auth = run(
        mail("d@inc.test"), keys, mail_from="d@inc.test", from_domain="inc.test", records=records
    )
    assert auth.spf == "pass"


def test_null_sender_is_checked_against_helo(keys: Keys) -> None:
    records = zone(keys)
    records["mx.client.test"] = [f"TXT v=spf1 ip4:{IP_GOOD} -all"]
    auth = run(mail(), keys, mail_from="", records=records)
    assert (auth.spf, auth.spf_domain) == ("pass", "mx.client.test")
    assert "smtp.helo=mx.client.test" in auth.header


def test_spf_dns_outage_is_temperror(keys: Keys) -> None:
    records = zone(keys)
    records["example.org"] = ["TXT TEMPFAIL"]
    auth = run(mail(), keys, records=records)
    assert auth.spf == "temperror"


# --- DMARC ----------------------------------------------------------------------------------


def test_dmarc_pass_through_aligned_spf(keys: Keys) -> None:
    auth = run(mail(), keys)
    assert (auth.dmarc, auth.dmarc_policy) == ("pass", "reject")


def test_dmarc_fails_for_a_forged_from(keys: Keys) -> None:
    # The forger's own domain passes SPF, but it is not the From domain.
    records = zone(keys)
    records["forger.test"] = [f"TXT v=spf1 ip4:{IP_OTHER} -all"]
    auth = run(mail(), keys, ip=IP_OTHER, mail_from="x@forger.test", records=records)
    assert auth.spf == "pass"
    assert not auth.aligned_spf_pass
    assert (auth.dmarc, auth.dmarc_policy) == ("fail", "reject")


def test_relaxed_alignment_accepts_a_subdomain_and_uses_sp(keys: Keys) -> None:
    records = zone(keys)
    records["bounce.relaxed.example"] = [f"TXT v=spf1 ip4:{IP_GOOD} -all"]
    auth = run(
        mail("e@news.relaxed.example"),
        keys,
        mail_from="b@bounce.relaxed.example",
        from_domain="news.relaxed.example",
        records=records,
    )
    assert auth.spf == "pass" and auth.aligned_spf_pass
    assert (auth.dmarc, auth.dmarc_policy) == ("pass", "reject")  # sp= for a subdomain


def test_strict_alignment_refuses_a_subdomain(keys: Keys) -> None:
    signed = sign(mail("f@strict.example"), keys["good"][0], domain="mail.strict.example")
    auth = run(signed, keys, mail_from="f@mail.strict.example", from_domain="strict.example")
    assert auth.spf == "pass" and auth.dkim[0].result == "pass"
    assert auth.dmarc == "fail"  # both only relaxed-aligned; the record wants strict


def test_dmarc_none_without_a_record(keys: Keys) -> None:
    auth = run(mail("g@nodmarc.test"), keys, mail_from="g@nodmarc.test", from_domain="nodmarc.test")
    assert (auth.dmarc, auth.dmarc_policy) == ("none", None)


def test_results_header_names_every_method(keys: Keys) -> None:
    auth = run(sign(mail(), keys["good"][0]), keys)
    assert auth.header.startswith("mx.mailbot.test;")
    for part in (
        "spf=pass smtp.mailfrom=example.org",
        "dkim=pass header.d=example.org",
        "dmarc=pass (p=reject) header.from=example.org",
    ):
        assert part in auth.header


def test_authentication_round_trips_through_json(keys: Keys) -> None:
    auth = run(sign(mail(), keys["good"][0]), keys)
    assert Authentication.from_json(auth.to_json()) == auth


def test_org_domain_follows_the_public_suffix_list() -> None:
    assert org_domain("a.b.example.co.uk") == "example.co.uk"
    assert org_domain("mail.example.org") == "example.org"


def test_org_domain_of_an_unlisted_tld_is_its_last_two_labels() -> None:
    assert org_domain("news.relaxed.example") == "relaxed.example"
    assert org_domain("mailbot.test") == "mailbot.test"
