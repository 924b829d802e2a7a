"""Delivery straight to MX hosts (MAILBOT_DELIVERY=mx), with DNS answered from a zone that
points the recipient's domain at a sink on loopback, and MTA-STS policies served through
httpx's MockTransport."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from mailbot.bots.default import app
from mailbot.config import Settings
from mailbot.errors import DeliveryError
from mailbot.outbound import mta_sts
from mailbot.outbound.connections import Connections, Peer
from mailbot.outbound.mta_sts import Policies
from mailbot.outbound.mx import MxTransport, exchanges
from mailbot.serve import Node, running
from mailbot.smtp.tls import ensure_self_signed
from mailbot.store.models import OutboundMessage, OutboundStatus
from mailbot.testing import make_thread, reply, settings_for
from mailbot.trust.resolver import ZoneResolver
from tests.sinks import ScriptedSink

ZONE = {
    "example.com": ["MX 20 backup.example.com", "MX 10 mx.example.com"],
    "mx.example.com": ["A 127.0.0.1"],
    "backup.example.com": ["A 127.0.0.2"],
}


async def _outbox(node: Node) -> list[OutboundMessage]:
    async with node.sessions() as session:
        return list(await session.scalars(select(OutboundMessage).order_by(OutboundMessage.id)))


async def _until_tried(node: Node, timeout: float = 30.0) -> OutboundMessage:
    async with asyncio.timeout(timeout):
        while True:
            rows = await _outbox(node)
            if rows and rows[0].attempts >= 1 and rows[0].status != OutboundStatus.sending:
                return rows[0]
            await asyncio.sleep(0.05)


async def _notify_bob(node: Node) -> None:
    thread = await make_thread(node, people=("alice", "bob"))
    row = await reply(node, "alice@example.com", thread.addresses["alice"], "Hi bob")
    assert row.status.value == "delivered", row.reason


def _mx(tmp_path: Path, zone: dict[str, list[str]], **overrides: object) -> Settings:
    return settings_for(tmp_path, None, delivery="mx", dns_zone=zone, **overrides)


def _policy_server(policy: str | None) -> Policies:
    """MTA-STS policies from a MockTransport: ``policy`` for every domain (None: 404)."""

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/.well-known/mta-sts.txt"
        if policy is None:
            return httpx.Response(404)
        return httpx.Response(200, text=policy, headers={"content-type": "text/plain"})

    def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(answer))

    return Policies(ZoneResolver(), client)


async def test_mail_goes_to_the_best_mx_of_the_recipients_domain(tmp_path: Path) -> None:
    async with ScriptedSink() as sink:
        settings = _mx(tmp_path, ZONE)
        transport = MxTransport(settings, port=sink.port)
        async with running(settings, app, http=False, transport=transport) as node:
            await _notify_bob(node)
            row = await _until_tried(node)
    assert row.status == OutboundStatus.sent
    [mail] = sink.received
    assert mail.rcpt_tos == ["bob@example.com"]
    assert mail.mail_from.startswith("bounces+")


async def test_a_domain_without_mx_gets_mail_at_its_own_address(tmp_path: Path) -> None:
    async with ScriptedSink() as sink:
        settings = _mx(tmp_path, {"example.com": ["A 127.0.0.1"]})
        transport = MxTransport(settings, port=sink.port)
        async with running(settings, app, http=False, transport=transport) as node:
            await _notify_bob(node)
            row = await _until_tried(node)
    assert row.status == OutboundStatus.sent and len(sink.received) == 1


async def test_a_null_mx_fails_the_mail_for_good_and_connects_nowhere(tmp_path: Path) -> None:
    async with ScriptedSink() as sink:
        settings = _mx(tmp_path, {"example.com": ["MX 0 .", "A 127.0.0.1"]})
        transport = MxTransport(settings, port=sink.port)
        async with running(settings, app, http=False, transport=transport) as node:
            await _notify_bob(node)
            row = await _until_tried(node)
    assert row.status == OutboundStatus.failed and row.attempts == 1
    assert row.reason == "example.com accepts no mail (null MX, RFC 7505)"
    assert sink.connections == 0


async def test_a_domain_with_no_mx_and_no_address_fails_for_good() -> None:
    with pytest.raises(DeliveryError) as refused:
        await exchanges(ZoneResolver({}), "nowhere.example")
    assert refused.value.permanent


async def test_dns_trouble_is_a_temporary_failure() -> None:
    with pytest.raises(DeliveryError) as refused:
        await exchanges(ZoneResolver({"example.com": ["MX TEMPFAIL"]}), "example.com")
    assert not refused.value.permanent


async def test_an_unreachable_mx_defers_the_mail_with_each_hosts_problem(tmp_path: Path) -> None:
    async with ScriptedSink() as sink:
        port = sink.port
    settings = _mx(tmp_path, ZONE)
    transport = MxTransport(settings, port=port)  # nothing listens there any more
    async with running(settings, app, http=False, transport=transport) as node:
        await _notify_bob(node)
        row = await _until_tried(node)
    assert row.status == OutboundStatus.deferred
    assert "mx.example.com" in (row.reason or "") and "backup.example.com" in (row.reason or "")


def _tls_sink(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for a sink whose certificate names ``name``, and a client context
    that trusts it."""
    cert, key = ensure_self_signed(tmp_path / name, Settings(hostname=name, domain=name))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


async def test_starttls_is_used_when_the_mx_offers_it(tmp_path: Path) -> None:
    server, _ = _tls_sink(tmp_path, "mx.example.com")
    async with ScriptedSink(tls=server) as sink:
        settings = _mx(tmp_path, ZONE)
        transport = MxTransport(settings, port=sink.port)  # unverified: opportunistic
        async with running(settings, app, http=False, transport=transport) as node:
            await _notify_bob(node)
            row = await _until_tried(node)
    assert row.status == OutboundStatus.sent
    assert [m.tls for m in sink.received] == [True]


ENFORCE = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n"
STS_ZONE = {**ZONE, "_mta-sts.example.com": ["TXT v=STSv1; id=20261128"]}


async def _under_policy(
    tmp_path: Path, sink: ScriptedSink, policy: str, trusting: ssl.SSLContext | None = None
) -> OutboundMessage:
    """Bob's notification, sent to example.com's MX (the sink) under the MTA-STS ``policy``;
    the row once tried."""
    settings = _mx(tmp_path, STS_ZONE)
    policies = _policy_server(policy)
    policies.resolver = ZoneResolver(STS_ZONE)
    transport = MxTransport(settings, port=sink.port, policies=policies, tls_context=trusting)
    async with running(settings, app, http=False, transport=transport) as node:
        await _notify_bob(node)
        return await _until_tried(node)


async def test_mta_sts_enforce_defers_rather_than_send_in_clear(tmp_path: Path) -> None:
    async with ScriptedSink() as sink:  # offers no STARTTLS
        row = await _under_policy(tmp_path, sink, ENFORCE)
    assert row.status == OutboundStatus.deferred
    assert "offers no STARTTLS, and TLS is required" in (row.reason or "")
    assert sink.received == [] and sink.answered == []
    # Only the host the policy names was tried: the backup MX is not in it.
    assert "backup.example.com" not in (row.reason or "")


async def test_mta_sts_enforce_delivers_over_verified_tls(tmp_path: Path) -> None:
    server, trusting = _tls_sink(tmp_path, "mx.example.com")
    async with ScriptedSink(tls=server) as sink:
        row = await _under_policy(tmp_path, sink, ENFORCE, trusting)
    assert row.status == OutboundStatus.sent
    assert [m.tls for m in sink.received] == [True]


async def test_mta_sts_enforce_refuses_a_certificate_that_does_not_verify(
    tmp_path: Path,
) -> None:
    server, _ = _tls_sink(tmp_path, "mx.example.com")  # self-signed, trusted by nobody
    async with ScriptedSink(tls=server) as sink:
        row = await _under_policy(tmp_path, sink, ENFORCE)
    assert row.status == OutboundStatus.deferred and "TLS failed" in (row.reason or "")
    assert sink.received == []


async def test_mta_sts_testing_mode_still_delivers_in_clear(tmp_path: Path) -> None:
    async with ScriptedSink() as sink:
        row = await _under_policy(tmp_path, sink, ENFORCE.replace("enforce", "testing"))
    assert row.status == OutboundStatus.sent and [m.tls for m in sink.received] == [False]


def test_policy_parsing_and_host_patterns() -> None:
    policy = mta_sts.parse(
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
        "max_age: 999999999\r\n"
    )
    assert policy.max_age == mta_sts.MAX_AGE_CAP
    assert policy.allows("MAIL.example.com.") and policy.allows("mx1.example.net")
    assert not policy.allows("a.b.example.net") and not policy.allows("example.net")
    for broken in (
        "mode: enforce\nmx: a\nmax_age: 1",
        "version: STSv1\nmode: x\nmx: a\nmax_age: 1",
    ):
        with pytest.raises(ValueError):
            mta_sts.parse(broken)
    assert mta_sts.record_id(["v=STSv1; id=abc123"]) == "abc123"
    assert mta_sts.record_id(["v=STSv1; id=a", "v=STSv1; id=b"]) is None  # two: none
    assert mta_sts.record_id(["v=spf1 -all"]) is None


def _serving(policies: list[str], record_id: str) -> tuple[Policies, ZoneResolver]:
    """Policies fetched from a MockTransport that serves ``policies`` (popped from the end),
    then answers 503; the domain's TXT record names ``record_id``."""
    resolver = ZoneResolver({"_mta-sts.example.com": [f"TXT v=STSv1; id={record_id}"]})

    def answer(request: httpx.Request) -> httpx.Response:
        if not policies:
            return httpx.Response(503)
        return httpx.Response(200, text=policies.pop(), headers={"content-type": "text/plain"})

    client = lambda: httpx.AsyncClient(transport=httpx.MockTransport(answer))  # noqa: E731
    return Policies(resolver, client), resolver


async def test_a_remembered_policy_holds_when_the_fetch_fails_later() -> None:
    policies, resolver = _serving([ENFORCE], "one")
    first = await policies.for_domain("example.com")
    assert first is not None and first.mode == "enforce"
    # The id changes (an attacker, or a real change) but the new policy cannot be fetched:
    # the one remembered still applies (RFC 8461 5.1), no downgrade to plain text.
    resolver.records[("_mta-sts.example.com", "TXT")] = ["v=STSv1; id=two"]
    assert await policies.for_domain("example.com") == first
    # No TXT record at all now: still remembered, within its max_age.
    resolver.records.pop(("_mta-sts.example.com", "TXT"))
    assert await policies.for_domain("example.com") == first
    assert await policies.for_domain("other.example") is None


async def test_a_remembered_policy_is_fetched_again_before_it_expires() -> None:
    policies, _ = _serving([ENFORCE.replace("enforce", "testing"), ENFORCE], "same")
    first = await policies.for_domain("example.com")
    assert first is not None and first.mode == "enforce"
    assert await policies.for_domain("example.com") == first  # fresh: not fetched again
    expires, policy, _ = policies._known["example.com"]
    policies._known["example.com"] = (expires, policy, 0.0)  # due for its refresh
    refreshed = await policies.for_domain("example.com")
    assert refreshed is not None and refreshed.mode == "testing"  # the same id, fetched anew
    expires, policy, _ = policies._known["example.com"]
    policies._known["example.com"] = (expires, policy, 0.0)
    assert await policies.for_domain("example.com") == refreshed  # the refresh failed: kept


async def test_a_kept_connection_is_never_reused_where_tls_is_now_required(
    tmp_path: Path,
) -> None:
    # A connection opened in plain (opportunistic, no STARTTLS offered) is kept; the next mail
    # to the same destination must be sent over TLS (an enforce policy appeared): it is not
    # given the plain connection, and this server cannot do TLS, so it is not sent at all.
    async with ScriptedSink() as sink:
        pool = Connections(local_hostname="mailbot.test", timeout=5)
        plain = Peer("127.0.0.1", sink.port, "opportunistic", "mx.example.com")
        required = Peer("127.0.0.1", sink.port, "required", "mx.example.com")
        await pool.send(
            "example.com", [plain], "b@x.test", "bob@example.com", b"Subject: 1\r\n\r\n1\r\n"
        )
        with pytest.raises(DeliveryError, match="offers no STARTTLS"):
            await pool.send(
                "example.com", [required], "b@x.test", "bob@example.com", b"Subject: 2\r\n\r\n2\r\n"
            )
        await pool.send(
            "example.com", [plain], "b@x.test", "bob@example.com", b"Subject: 3\r\n\r\n3\r\n"
        )
        await pool.close()
    assert [m.data for m in sink.received] == [
        b"Subject: 1\r\n\r\n1\r\n",
        b"Subject: 3\r\n\r\n3\r\n",
    ]
    assert pool.opened == 2  # the third reused nothing: the plain one was closed for the second
