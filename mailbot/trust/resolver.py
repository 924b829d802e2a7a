"""DNS lookups for sender authentication, behind one small interface that tests replace.

SPF, DKIM and DMARC all ask DNS questions; the libraries that answer them (pyspf, dkimpy,
authheaders) each have their own way to be pointed at a resolver. :mod:`mailbot.trust.authenticate`
adapts them all to one :class:`Resolver`: ``lookup(name, rdtype) -> list[str]``, an empty
list for "no such name / no such record", :class:`DnsTempError` for "could not find out"
(a timeout, SERVFAIL), which SPF and DMARC report as ``temperror``.

Two resolvers ship:

- :class:`SystemResolver`: dnspython with the machine's resolver configuration.
- :class:`ZoneResolver`: offline, answers from zone data it is given and NXDOMAIN for
  everything else. ``mailbot.testing.settings_for`` selects it, so no test ever asks the
  network; a test that wants records passes them::

      settings_for(tmp_path, dns_zone={
          "example.org": ["TXT v=spf1 ip4:192.0.2.0/24 -all", "MX 10 mx.example.org"],
          "_dmarc.example.org": ["TXT v=DMARC1; p=reject"],
      })

Lookups are synchronous: they run in a worker thread, never on the SMTP event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import dns.exception
import dns.resolver

from mailbot.config import Settings

RDTYPES = frozenset({"A", "AAAA", "MX", "TXT", "PTR", "CNAME"})


class DnsTempError(Exception):
    """The answer could not be had now (timeout, SERVFAIL): a temporary error, not "none"."""


class Resolver(Protocol):
    def lookup(self, name: str, rdtype: str) -> list[str]:
        """Record data as text (TXT strings joined, MX as "pref host"); [] when none."""
        ...


def _name(name: str) -> str:
    return name.strip().rstrip(".").lower()


class SystemResolver:
    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._resolver = dns.resolver.Resolver()

    def lookup(self, name: str, rdtype: str) -> list[str]:
        try:
            answer = self._resolver.resolve(_name(name), rdtype, lifetime=self.timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise DnsTempError(f"DNS {rdtype} {name}: {exc}") from exc
        except dns.exception.DNSException as exc:  # a malformed name, for one: no records
            raise DnsTempError(f"DNS {rdtype} {name}: {exc}") from exc
        out: list[str] = []
        for rdata in answer:
            if rdtype == "TXT":
                out.append(b"".join(rdata.strings).decode("utf-8", "replace"))
            elif rdtype == "MX":
                out.append(f"{rdata.preference} {rdata.exchange.to_text(omit_final_dot=True)}")
            else:
                out.append(rdata.to_text().rstrip("."))
        return out


class ZoneResolver:
    """Answers from ``zone``: name → ["TYPE data", ...]; NXDOMAIN for any other name.

    A record whose data is ``TEMPFAIL`` (``"TXT TEMPFAIL"``) makes that lookup raise
    :class:`DnsTempError`, to test how a DNS outage is reported.
    """

    def __init__(self, zone: Mapping[str, list[str]] | None = None) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        for name, records in (zone or {}).items():
            for record in records:
                rdtype, _, data = record.strip().partition(" ")
                rdtype = rdtype.upper()
                if rdtype not in RDTYPES:
                    raise ValueError(f"unknown record type in zone data for {name}: {record!r}")
                self.records.setdefault((_name(name), rdtype), []).append(data.strip())

    def lookup(self, name: str, rdtype: str) -> list[str]:
        found = self.records.get((_name(name), rdtype.upper()), [])
        if "TEMPFAIL" in found:
            raise DnsTempError(f"DNS {rdtype} {name}: simulated timeout")
        return list(found)


def resolver_for(settings: Settings) -> Resolver:
    if settings.dns == "offline":
        return ZoneResolver(settings.dns_zone)
    return SystemResolver(settings.dns_timeout)
