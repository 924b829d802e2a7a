"""The open-relay matrix: every kind of session × every kind of recipient, over real sockets.

Sessions: anonymous in the clear, anonymous over STARTTLS, authenticated over STARTTLS,
authenticated over implicit TLS. Recipients: ours (a live reply address, a routed address)
and not ours (foreign domains, and the old relay tricks that hide a foreign domain inside a
local part). Ours are accepted for everyone; not ours are refused for everyone, AUTH or not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiosmtplib
import pytest
import pytest_asyncio
from sqlalchemy import select

from mailbot import Mailbot
from mailbot.bots.comments import CommentsBot
from mailbot.serve import Node, running
from mailbot.smtp.submitters import hash_password
from mailbot.store.models import InboundMessage
from mailbot.testing import build_mail, make_thread, settings_for
from tests.transport import PASSWORD, client

pytestmark = pytest.mark.asyncio(loop_scope="module")

SESSIONS = ["anonymous", "anonymous-starttls", "authenticated-starttls", "authenticated-smtps"]

FOREIGN = {
    "foreign domain": "victim@gmail.example",
    "foreign domain, upper case": "VICTIM@GMAIL.EXAMPLE",
    "subdomain of ours": "victim@mail.localhost",
    "our name inside a foreign one": "victim@localhost.attacker.example",
    "address literal": "victim@[192.0.2.1]",
    "source route": "<@localhost:victim@gmail.example>",
}
# Refused by aiosmtpd's address parser before our policy sees it.
MALFORMED = {
    "ours with a trailing dot": "victim@localhost.",
    "two at signs": "victim@gmail.example@localhost",
}
# Relay tricks aimed at servers that forward local parts: we forward nothing, and no route
# claims these, so they are unknown mailboxes.
DISGUISED = {
    "percent hack": "victim%gmail.example@localhost",
    "bang path": "gmail.example!victim@localhost",
    "quoted at sign": '"victim@gmail.example"@localhost',
}


@dataclass
class Relay:
    node: Node
    token_address: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def relay(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Relay]:
    settings = settings_for(
        tmp_path_factory.mktemp("relay"),
        smtps_port=0,
        smtp_users={"webapp": hash_password(PASSWORD)},
    )
    app = Mailbot(bots=[CommentsBot], routes=[("support", CommentsBot)])
    async with running(settings, app, work=False, http=False) as node:
        thread = await make_thread(node, key="relay")
        yield Relay(node, thread.addresses["alice"])


async def _open(node: Node, session: str) -> aiosmtplib.SMTP:
    smtp = client(node, implicit=session.endswith("smtps"))
    await smtp.connect()
    await smtp.ehlo()
    if session.endswith("starttls"):
        await smtp.starttls()
        await smtp.ehlo()
    if session.startswith("authenticated"):
        await smtp.login("webapp", PASSWORD)
    return smtp


async def _rcpt(node: Node, session: str, address: str) -> tuple[int, str]:
    smtp = await _open(node, session)
    try:
        await smtp.mail("someone@example.com")
        try:
            reply = await smtp.execute_command(b"RCPT", b"TO:" + _angled(address).encode())
        finally:
            await smtp.rset()
        return reply.code, reply.message
    finally:
        await smtp.quit()


def _angled(address: str) -> str:
    return address if address.startswith("<") else f"<{address}>"


@pytest.mark.parametrize("session", SESSIONS)
@pytest.mark.parametrize("kind", sorted(FOREIGN))
async def test_foreign_recipient_is_refused_to_every_session(
    relay: Relay, session: str, kind: str
) -> None:
    code, message = await _rcpt(relay.node, session, FOREIGN[kind])
    assert (code, message.split()[0]) == (550, "5.7.1"), message


@pytest.mark.parametrize("session", SESSIONS)
@pytest.mark.parametrize("kind", sorted(DISGUISED))
async def test_foreign_recipient_disguised_as_a_local_part_is_refused_to_every_session(
    relay: Relay, session: str, kind: str
) -> None:
    code, message = await _rcpt(relay.node, session, DISGUISED[kind])
    assert (code, message.split()[0]) == (550, "5.1.1"), message


@pytest.mark.parametrize("session", SESSIONS)
@pytest.mark.parametrize("kind", sorted(MALFORMED))
async def test_malformed_recipient_is_refused_to_every_session(
    relay: Relay, session: str, kind: str
) -> None:
    code, message = await _rcpt(relay.node, session, MALFORMED[kind])
    assert (code, message.split()[0]) in {(553, "5.1.3"), (550, "5.1.1")}, message


@pytest.mark.parametrize("session", SESSIONS)
@pytest.mark.parametrize("kind", ["reply address", "routed address"])
async def test_local_recipient_is_accepted_from_every_session(
    relay: Relay, session: str, kind: str
) -> None:
    to = relay.token_address if kind == "reply address" else "Support@LOCALHOST"
    smtp = await _open(relay.node, session)
    async with smtp:
        errors, message = await smtp.sendmail(
            "someone@example.com", [to], build_mail("someone@example.com", to, "hello")
        )
    assert errors == {}
    assert message.startswith("2.0.0 OK: queued as")


@pytest.mark.parametrize("session", ["anonymous", "authenticated-starttls"])
async def test_mixed_recipients_keep_only_ours_and_the_foreign_one_is_refused(
    relay: Relay, session: str
) -> None:
    foreign = "victim@gmail.example"
    smtp = await _open(relay.node, session)
    async with smtp:
        errors, message = await smtp.sendmail(
            "someone@example.com",
            [foreign, relay.token_address],
            build_mail("someone@example.com", relay.token_address, "both"),
        )
    assert errors[foreign][0] == 550
    inbound_id = int(message.rsplit(" ", 1)[1])
    async with relay.node.sessions() as db:
        rcpt_tos = await db.scalar(
            select(InboundMessage.rcpt_tos).where(InboundMessage.id == inbound_id)
        )
    assert rcpt_tos == [relay.token_address]
