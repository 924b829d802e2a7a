"""Who really sent this? SPF, DKIM and DMARC for one received message.

- **SPF** (RFC 7208, pyspf): may the client IP send for the envelope sender's domain (the
  HELO name for the null sender)?
- **DKIM** (RFC 6376, dkimpy): every ``DKIM-Signature`` is checked; a signature whose key is
  not in DNS is ``permerror``, a tampered body or a wrong key is ``fail``.
- **DMARC** (RFC 7489): does an SPF or DKIM pass belong to the From domain (relaxed or
  strict alignment, as the domain's record says)? ``none`` when the domain publishes no
  record; the record's policy (``p``/``sp``) is kept beside the result.

The result is stored on the row (``authentication``), in the parsed JSON, and as an
``Authentication-Results`` header (RFC 8601) in the parsed headers, where it replaces any
such header a sender wrote in our name. Every DNS question goes through one injected
:class:`~mailbot.trust.resolver.Resolver`. Synchronous and blocking: the worker runs
:func:`check_sender` (SPF, DKIM) in a thread beside the analyser, and :func:`judge_from`
(DMARC) once the analyser has read the From header; nothing here parses headers on the
event loop.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Any

import dkim
from publicsuffix2 import PublicSuffixList

from mailbot.addresses import domain_of
from mailbot.parse import ParsedMail
from mailbot.screen import header_end
from mailbot.trust.resolver import DnsTempError, Resolver

with warnings.catch_warnings():
    # pyspf 2.0.14 has invalid escapes ("\\d") in docstrings, warned about when it is
    # compiled (DeprecationWarning on 3.11, SyntaxWarning from 3.12).
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", SyntaxWarning)
    import spf
    from authheaders.dmarc_lookup import DMARCException, answer_to_dict  # imports spf too

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DkimSignature:
    domain: str
    selector: str
    result: str  # pass | fail | permerror | temperror
    reason: str = ""


@dataclass
class Authentication:
    """What was proven about the sender; the JSON shape stored on the row."""

    spf: str = "none"  # pass | fail | softfail | neutral | none | permerror | temperror
    spf_domain: str = ""  # the domain SPF was checked for (MAIL FROM's, or HELO's)
    spf_reason: str = ""
    dkim: list[DkimSignature] = field(default_factory=list)
    dmarc: str = "none"  # pass | fail | none | temperror | permerror
    dmarc_policy: str | None = None  # none | quarantine | reject, as published
    from_domain: str = ""  # the one From domain; "" when there are none or several
    from_domains: list[str] = field(default_factory=list)  # every From domain, as evaluated
    smtp_auth: str | None = None  # the trusted submitter who logged in (SMTP AUTH), if any
    header: str = ""  # the Authentication-Results value

    @property
    def aligned_dkim_pass(self) -> bool:
        """A valid DKIM signature by the From domain's organization."""
        return any(
            s.result == "pass" and aligned(s.domain, self.from_domain, strict=False)
            for s in self.dkim
        )

    @property
    def aligned_spf_pass(self) -> bool:
        return self.spf == "pass" and aligned(self.spf_domain, self.from_domain, strict=False)

    @property
    def sender_verified(self) -> bool:
        """The From address provably belongs to whoever sent this (SPF or DKIM, aligned):
        only such a sender may be told why their mail was refused (else: backscatter)."""
        return self.aligned_spf_pass or self.aligned_dkim_pass

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Authentication:
        values = dict(data)
        values["dkim"] = [DkimSignature(**s) for s in values.get("dkim", [])]
        return cls(**values)


@lru_cache(maxsize=1)
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()


@lru_cache(maxsize=4096)
def org_domain(domain: str) -> str:
    """The organizational domain (RFC 7489 §3.2): ``mail.example.co.uk`` → ``example.co.uk``."""
    domain = domain.lower().rstrip(".")
    found = _suffixes().get_sld(domain, strict=True)
    if found:
        return str(found)
    # A TLD the list does not know (.test, .example): the PSL's implicit "*" rule makes it
    # a one-label suffix (publicsuffix2 would answer the bare TLD).
    return ".".join(domain.split(".")[-2:])


def aligned(domain: str, from_domain: str, *, strict: bool) -> bool:
    if not domain or not from_domain:
        return False
    domain, from_domain = domain.lower(), from_domain.lower()
    return domain == from_domain if strict else org_domain(domain) == org_domain(from_domain)


def authenticate(
    raw: bytes,
    *,
    client_ip: str | None,
    helo: str | None,
    mail_from: str,
    resolver: Resolver,
    authserv_id: str,
    from_domain: str = "",
    from_domains: list[str] | None = None,
    smtp_auth: str | None = None,
) -> Authentication:
    """Everything at once (tools, tests, benchmarks). The worker runs the two halves apart:
    :func:`check_sender` beside the analyser, :func:`judge_from` once the From is parsed."""
    auth = check_sender(
        raw,
        client_ip=client_ip,
        helo=helo,
        mail_from=mail_from,
        resolver=resolver,
        smtp_auth=smtp_auth,
    )
    domains = from_domains if from_domains is not None else [from_domain] if from_domain else []
    return judge_from(auth, domains, resolver, authserv_id, mail_from)


def check_sender(
    raw: bytes,
    *,
    client_ip: str | None,
    helo: str | None,
    mail_from: str,
    resolver: Resolver,
    smtp_auth: str | None = None,
) -> Authentication:
    """SPF and every DKIM signature: what needs no From header. Blocking (DNS): run it in a
    thread. The raw bytes were screened at DATA time (bounded header block)."""
    auth = Authentication(smtp_auth=smtp_auth)
    auth.spf, auth.spf_domain, auth.spf_reason = check_spf(client_ip, helo, mail_from, resolver)
    auth.dkim = check_dkim(raw, resolver)
    return auth


def judge_from(
    auth: Authentication,
    from_domains: list[str],
    resolver: Resolver,
    authserv_id: str,
    mail_from: str,
) -> Authentication:
    """DMARC for the From domains, and the header. RFC 7489 §6.6.1: mail with several From
    domains is evaluated for each, and fails if any fails (a forger adds his own address
    beside the victim's); mail with none has no DMARC identity (``permerror``)."""
    domains = list(dict.fromkeys(d.lower().rstrip(".") for d in from_domains if d))
    result = replace(
        auth, from_domains=domains, from_domain=domains[0] if len(domains) == 1 else ""
    )
    if not domains:
        result.dmarc, result.dmarc_policy = "permerror", None
    else:
        verdicts = [check_dmarc(replace(result, from_domain=d), resolver) for d in domains]
        result.dmarc, result.dmarc_policy = _worst(verdicts)
    result.header = results_header(result, authserv_id, mail_from)
    return result


# Worst first: one failing From domain fails the message, whatever the others say.
_DMARC_ORDER = ("fail", "temperror", "permerror", "none", "pass")
_POLICY_ORDER = ("reject", "quarantine", "none", None)


def _worst(verdicts: list[tuple[str, str | None]]) -> tuple[str, str | None]:
    result = min((v[0] for v in verdicts), key=_DMARC_ORDER.index)
    policies = [p for r, p in verdicts if r == result]
    return result, min(
        policies, key=lambda p: _POLICY_ORDER.index(p if p in _POLICY_ORDER else None)
    )


def annotate(
    parsed: dict[str, Any], auth: dict[str, Any] | None, authserv_id: str
) -> dict[str, Any]:
    """The parsed JSON with the results as fields and as the first header. An
    ``Authentication-Results`` a sender wrote in our name is dropped (RFC 8601 §5): only
    ours may claim to be ours."""
    if not auth:
        return parsed
    ours = authserv_id.lower()
    headers = [
        h
        for h in parsed.get("headers", [])
        if not (
            str(h[0]).lower() == "authentication-results"
            and str(h[1]).split(";")[0].strip().lower() == ours
        )
    ]
    header = ["Authentication-Results", auth.get("header", "")]
    return {**parsed, "headers": [header, *headers], "authentication": auth}


# --- SPF ------------------------------------------------------------------------------------


class _SpfQuery(spf.query):
    """pyspf's query with its DNS taken from our resolver instead of the module-global
    ``spf.DNSLookup`` (which would be shared by every caller in the process)."""

    def __init__(self, resolver: Resolver, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._resolver = resolver

    def dns(
        self, name: str, qtype: str, cnames: object = None, ignore_void: bool = False
    ) -> list[Any]:
        name = str(name).rstrip(".").lower()
        if not name:
            raise spf.PermError("empty domain name")
        if (name, qtype) in self.cache:
            return list(self.cache[(name, qtype)])
        try:
            found = self._resolver.lookup(name, qtype)
        except DnsTempError as exc:
            raise spf.TempError(str(exc)) from exc
        result: list[Any]
        if qtype in ("TXT", "SPF"):
            result = [(value.encode("utf-8"),) for value in found]
        elif qtype == "MX":
            result = [(int(p), host) for p, _, host in (v.partition(" ") for v in found)]
        else:
            result = list(found)
        self.cache[(name, qtype)] = result
        if not result and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return result


def check_spf(
    client_ip: str | None, helo: str | None, mail_from: str, resolver: Resolver
) -> tuple[str, str, str]:
    """(result, domain checked, reason). The null sender is checked as postmaster@HELO."""
    sender = mail_from or (f"postmaster@{helo}" if helo else "")
    domain = domain_of(sender)
    if not client_ip or not domain:
        return "none", domain, "no client IP or no sender domain to check"
    try:
        query = _SpfQuery(resolver, i=client_ip, s=sender, h=helo or domain, timeout=20)
        result, _code, explanation = query.check()
    except Exception as exc:  # noqa: BLE001 - pyspf raises on odd input; never lose the mail
        return "permerror", domain, f"{type(exc).__name__}: {exc}"
    return str(result), domain, str(explanation)


# --- DKIM -----------------------------------------------------------------------------------


# At a line start in the header section; dkimpy reads field names the same way.
_DKIM_FIELD = re.compile(rb"^dkim-signature[ \t]*:", re.IGNORECASE | re.MULTILINE)


def check_dkim(raw: bytes, resolver: Resolver) -> list[DkimSignature]:
    head = memoryview(raw)[: header_end(raw)]  # bounded: the header section was screened
    if _DKIM_FIELD.search(head) is None:
        return []  # dkimpy would copy the whole body only to find no signature
    try:
        verifier = dkim.DKIM(raw, minkey=1024, timeout=5)
    except Exception as exc:  # noqa: BLE001 - unparseable headers: no signature to check
        log.info("DKIM could not read the message: %s", exc)
        return []
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    return [_verify_one(verifier, idx, resolver) for idx in range(count)]


def _verify_one(verifier: dkim.DKIM, idx: int, resolver: Resolver) -> DkimSignature:
    problems: list[str] = []

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            found = resolver.lookup(text, "TXT")
        except DnsTempError as exc:
            problems.append("temperror")
            raise dkim.DnsTimeoutError(str(exc)) from exc
        if not found:
            problems.append("nokey")
            return None
        return found[0].encode("utf-8")

    try:
        ok = verifier.verify(idx=idx, dnsfunc=dnsfunc)
        reason = "" if ok else "signature does not verify"
    except dkim.ValidationError as exc:
        ok, reason = False, str(exc)
    except dkim.DKIMException as exc:
        domain = _field(verifier, b"d")
        return DkimSignature(domain, _field(verifier, b"s"), "permerror", str(exc))
    domain, selector = _field(verifier, b"d"), _field(verifier, b"s")
    if "temperror" in problems:
        return DkimSignature(domain, selector, "temperror", "key lookup timed out")
    if "nokey" in problems:
        return DkimSignature(domain, selector, "permerror", "no key published for selector")
    if not ok and "body hash mismatch" in reason:
        reason = "body hash mismatch: the message was changed after signing"
    return DkimSignature(domain, selector, "pass" if ok else "fail", reason)


def _field(verifier: dkim.DKIM, tag: bytes) -> str:
    value = (verifier.signature_fields or {}).get(tag, b"")
    return value.decode("ascii", "replace").lower() if isinstance(value, bytes) else ""


# --- DMARC ----------------------------------------------------------------------------------


def _dmarc_record(domain: str, resolver: Resolver) -> dict[str, str] | None:
    records = [r for r in resolver.lookup(f"_dmarc.{domain}", "TXT") if r.startswith("v=DMARC1")]
    if len(records) != 1:
        return None  # none, or several (RFC 7489 §6.6.3: as if none)
    try:
        tags: dict[str, str] = answer_to_dict(records[0])
    except DMARCException:
        return None
    return tags if tags.get("p") else None


def check_dmarc(auth: Authentication, resolver: Resolver) -> tuple[str, str | None]:
    domain = auth.from_domain
    if not domain:
        return "permerror", None  # no single readable From domain
    try:
        record = _dmarc_record(domain, resolver)
        policy_key = "p"
        if record is None and org_domain(domain) != domain:
            record = _dmarc_record(org_domain(domain), resolver)
            policy_key = "sp"
    except DnsTempError:
        return "temperror", None
    if record is None:
        return "none", None
    policy = record.get(policy_key) or record["p"]
    dkim_ok = any(
        s.result == "pass" and aligned(s.domain, domain, strict=record.get("adkim") == "s")
        for s in auth.dkim
    )
    spf_ok = auth.spf == "pass" and aligned(
        auth.spf_domain, domain, strict=record.get("aspf") == "s"
    )
    return ("pass" if dkim_ok or spf_ok else "fail"), policy


# --- the header -----------------------------------------------------------------------------


def results_header(auth: Authentication, authserv_id: str, mail_from: str) -> str:
    parts = [authserv_id]
    if auth.smtp_auth:
        parts.append(f"auth=pass smtp.auth={auth.smtp_auth}")
    if mail_from:
        parts.append(f"spf={auth.spf} smtp.mailfrom={auth.spf_domain or 'unknown'}")
    else:
        parts.append(f"spf={auth.spf} smtp.helo={auth.spf_domain or 'unknown'}")
    if not auth.dkim:
        parts.append("dkim=none")
    for s in auth.dkim:
        comment = f" ({s.reason})" if s.reason and s.result != "pass" else ""
        parts.append(f"dkim={s.result}{comment} header.d={s.domain} header.s={s.selector}")
    policy = f" (p={auth.dmarc_policy})" if auth.dmarc_policy else ""
    header_from = auth.from_domain or ",".join(auth.from_domains) or "unknown"
    parts.append(f"dmarc={auth.dmarc}{policy} header.from={header_from}")
    return ";\n\t".join(parts)


def from_domains_of(parsed: ParsedMail) -> list[str]:
    """The domains of every From address the parser found (one, normally)."""
    return [domain_of(a.address) for a in parsed.from_ if "@" in a.address]
