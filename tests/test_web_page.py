"""Issue #11: the page, in a real browser (Debian's chromium driven by Playwright), against a
real node: mail over SMTP on loopback, HTTP and the WebSocket over real sockets.

Screenshots of each page land in ``$MAILBOT_SCREENSHOTS`` (default: the test's tmp dir).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Request, async_playwright
from sqlalchemy import select

from mailbot import Bot, InboundMail, Mailbot
from mailbot.bots.comments import CommentsBot
from mailbot.bots.default import app
from mailbot.serve import Node, running
from mailbot.store import api_tokens
from mailbot.store.models import OutboundMessage, OutboundStatus, ReplyToken
from mailbot.testing import (
    build_mail,
    make_thread,
    reply,
    settings_for,
    smtp_send,
    wait_for_status,
)
from mailbot.testing.spamd import GTUBE, Spamd

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
STEP = 15_000  # ms Playwright waits for something to show (a bound, not a speed check)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with running(settings_for(tmp_path), app) as node:
        yield node


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed: apt-get install chromium"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield launched
        finally:
            await launched.close()


def _shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MAILBOT_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def _page(browser: Browser, node: Node) -> Page:
    page = await browser.new_page(base_url=f"http://127.0.0.1:{node.http_port}")
    page.set_default_timeout(STEP)
    return page


async def test_mail_sent_over_smtp_appears_in_the_open_inbox_without_a_reload(
    node: Node, browser: Browser, tmp_path: Path
) -> None:
    thread = await make_thread(node, people=("alice", "bob"))
    page = await _page(browser, node)
    await page.goto("/")
    await page.locator("#live.on").wait_for()
    await page.evaluate("window.stillTheSamePage = true")

    raw = build_mail(
        "alice@example.com", thread.addresses["alice"], "The toner is back.", subject="Toner"
    )
    sent = await smtp_send(node.smtp_port, "alice@example.com", [thread.addresses["alice"]], raw)
    row = page.locator(f'#inbox tr[data-id="{sent.inbound_id}"]')
    await row.wait_for()
    # It arrives as whatever it is then, and changes in place as the pipeline goes on.
    await page.locator(
        f'#inbox tr[data-id="{sent.inbound_id}"][data-status="delivered"]'
    ).wait_for()
    assert await page.evaluate("window.stillTheSamePage") is True
    assert "Toner" in await row.inner_text()
    # Reloaded, the charts count it: one delivered mail this hour.
    await page.reload()
    await page.locator('#chart-volume rect[data-status="delivered"]').wait_for()
    await page.locator("#live.on").wait_for()
    await page.screenshot(path=_shots(tmp_path) / "inbox.png", full_page=True)

    # The search box narrows the list, and the live feed honours it.
    await page.fill("#q", "subject:nothing-like-this")
    await page.press("#q", "Enter")
    await page.locator("#empty").wait_for()
    assert await page.locator("#inbox tbody tr").count() == 0
    await page.fill("#q", "subject:toner")
    await page.press("#q", "Enter")
    await row.wait_for()


async def test_the_page_reconnects_and_catches_up_on_what_it_missed(
    tmp_path: Path, browser: Browser
) -> None:
    port = _free_port()
    settings = settings_for(tmp_path, http_port=port)
    async with running(settings, app) as first:
        thread = await make_thread(first, people=("alice", "bob"))
        page = await _page(browser, first)
        await page.goto("/")
        await page.locator("#live.on").wait_for()
    await page.locator("#live.off").wait_for()  # the node stopped: the page keeps trying
    # Mail comes and is handled while no web side runs...
    async with running(settings, app, http=False) as second:
        missed = await reply(second, "alice@example.com", thread.addresses["alice"], "Away.")
    # ...and the page, reconnected to a web-only node, shows it without a reload.
    async with running(settings, app, smtp=False, work=False):
        await page.locator(f'#inbox tr[data-id="{missed.id}"][data-status="delivered"]').wait_for()
        await page.locator("#live.on").wait_for()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


HOSTILE_HTML = """\
<html><head>
<meta http-equiv="refresh" content="0;url={canary}/refresh">
<style>body {{ background: url({canary}/css-url) }}</style>
<script>fetch("{canary}/script"); parent.document.title = "pwned"; alert(1)</script>
</head><body>
<p onmouseover="fetch('{canary}/handler')">Hello <b>in bold</b>.</p>
<img src="{canary}/remote.png" onerror="fetch('{canary}/onerror')">
<a href="javascript:fetch('{canary}/js-link')">a javascript: link</a>
<div style="background-image: url({canary}/inline-style)">styled</div>
<iframe src="{canary}/frame"></iframe><object data="{canary}/object"></object>
<form action="{canary}/form"><input name=x></form>
</body></html>
"""


class Canary:
    """An HTTP server standing for "anywhere else": it counts every request it gets."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.port = 0

    async def __aenter__(self) -> Canary:
        self.server = await asyncio.start_server(self._serve, "127.0.0.2", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        self.hits.append(line.decode(errors="replace").strip())
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.2:{self.port}"


async def test_the_message_page_shows_sanitised_html_that_runs_nothing_and_loads_nothing(
    node: Node, browser: Browser, tmp_path: Path
) -> None:
    thread = await make_thread(node, people=("alice", "bob"))
    async with Canary() as canary:
        html = HOSTILE_HTML.format(canary=canary.url)
        raw = build_mail(
            "alice@example.com",
            thread.addresses["alice"],
            "Hello in bold.",
            subject="Look at this",
            html=html,
        )
        row = await reply(node, "alice@example.com", thread.addresses["alice"], raw)
        page = await _page(browser, node)
        requests: list[str] = []
        dialogs: list[str] = []
        errors: list[str] = []
        page.on("request", lambda r: requests.append(_url(r)))
        page.on("dialog", lambda d: dialogs.append(d.message))
        page.on("console", lambda m: errors.append(_text(m)) if m.type == "error" else None)

        await page.goto(f"/messages/{row.id}")
        frame_element = page.locator("#html")
        await frame_element.wait_for()
        frame = page.frame_locator("#html")
        await frame.locator("b", has_text="in bold").wait_for()
        await page.locator("#timeline li", has_text="dispatch").wait_for()
        await page.locator("#timeline li", has_text="parse and strip").wait_for()
        await page.locator("#reply", has_text="Hello in bold.").wait_for()
        # Hover and click what a script would hang on: nothing may happen.
        await frame.locator("p").hover()
        await frame.locator("a").click()
        await page.wait_for_load_state("networkidle")
        await page.screenshot(path=_shots(tmp_path) / "message.png", full_page=True)

        title = await page.title()
        inner = await frame_element.get_attribute("sandbox")
    assert canary.hits == [], canary.hits
    assert not [u for u in requests if not u.startswith(f"http://127.0.0.1:{node.http_port}/")]
    assert dialogs == []
    assert title != "pwned"
    assert inner == ""  # sandboxed: no scripts, no forms, no top navigation
    # What the browser blocked is reported as CSP errors; no page script failed.
    assert not [e for e in errors if "Content Security Policy" not in e and "ERR_" not in e], errors


def _url(request: Request) -> str:
    return request.url


def _text(message: ConsoleMessage) -> str:
    return message.text


async def test_a_quarantined_mail_is_released_by_clicking(tmp_path: Path, browser: Browser) -> None:
    with Spamd() as spamd:
        settings = settings_for(tmp_path, spamd=spamd.address)
        async with running(settings, app) as node:
            thread = await make_thread(node, people=("alice", "bob"))
            raw = build_mail(
                "alice@example.com",
                thread.addresses["alice"],
                f"Cheap offer inside.\n\n{GTUBE}\n",
                subject="Re: offer",
            )
            held = await reply(node, "alice@example.com", thread.addresses["alice"], raw)
            assert held.status.value == "quarantined"
            page = await _page(browser, node)
            await page.goto(f"/messages/{held.id}")
            await page.locator("#summary", has_text="quarantined").wait_for()
            await page.screenshot(path=_shots(tmp_path) / "quarantined.png", full_page=True)
            await page.click("#release")
            # Released, it goes through the pipeline again, to the bot this time.
            await page.locator("#summary", has_text="delivered").wait_for()
            await page.locator("#timeline li", has_text="dispatch").wait_for()
            assert await page.locator("#release").count() == 0
            await page.goto(f"/conversations/{thread.key}")
            await page.locator("#comments li", has_text="Cheap offer inside.").wait_for()


async def test_a_reply_address_is_revoked_and_a_held_mail_cancelled_by_clicking(
    node: Node, browser: Browser, tmp_path: Path
) -> None:
    thread = await make_thread(node, people=("alice", "bob"))
    done = await reply(node, "alice@example.com", thread.addresses["alice"], "Hello Bob.")
    assert done.status.value == "delivered"
    page = await _page(browser, node)

    await page.goto("/conversations")
    await page.click(f'#conversations tr[data-key="{thread.key}"] a')
    await page.locator("#comments li", has_text="Hello Bob.").wait_for()
    await page.screenshot(path=_shots(tmp_path) / "conversation.png", full_page=True)
    alice = thread.participants["alice"].id
    async with node.sessions() as session:
        [token_id] = await session.scalars(
            select(ReplyToken.id).where(ReplyToken.participant_id == alice)
        )
    row = page.locator(f'#participants tr[data-token="{token_id}"]')
    await row.locator("button.revoke").click()
    await row.locator("td", has_text="revoked").wait_for()
    refused = await smtp_send(
        node.smtp_port, "alice@example.com", [thread.addresses["alice"]], b"Subject: x\r\n\r\nx\r\n"
    )
    assert refused.rcpt_codes[0][0] == 550

    # The comment to Bob is held (no relay): cancel it from the outbox page.
    await page.goto("/outbox")
    held = page.locator('#outbox tr[data-status="held"]')
    await held.first.wait_for()
    await held.first.locator("button.cancel").click()
    cancelled = page.locator('#outbox tr[data-status="failed"]', has_text="cancelled")
    await cancelled.wait_for()
    async with node.sessions() as session:
        statuses = set(await session.scalars(select(OutboundMessage.status)))
    assert statuses == {OutboundStatus.failed}
    # Changed our mind: Retry puts it back (held again: still no relay).
    await cancelled.locator("button.retry").click()
    await page.locator(
        '#outbox tr[data-status="held"]', has_text="retried by an operator"
    ).wait_for()
    await page.screenshot(path=_shots(tmp_path) / "outbox.png", full_page=True)
    async with node.sessions() as session:
        statuses = set(await session.scalars(select(OutboundMessage.status)))
    assert statuses == {OutboundStatus.held}


ADMIN = "admin-token-for-the-login-test-0123"


async def test_with_a_token_required_the_page_asks_for_one_and_works_after_login(
    tmp_path: Path, browser: Browser
) -> None:
    async with running(settings_for(tmp_path, api_token=ADMIN), app) as node:
        async with node.sessions() as session, session.begin():
            made = await api_tokens.create(session, "ann")
            revoked = await api_tokens.create(session, "old")
        async with node.sessions() as session, session.begin():
            assert await api_tokens.revoke(session, "old")
        thread = await make_thread(node, people=("alice", "bob"))
        page = await _page(browser, node)
        await page.goto("/")
        assert page.url.endswith("/login")
        for wrong in ("mbt_not-a-token", revoked):
            await page.fill("#token", wrong)
            await page.click("#login button")
            await page.locator("#notice", has_text="not valid").wait_for()
        await page.fill("#token", made)
        await page.click("#login button")
        await page.locator("#live.on").wait_for()  # the socket carried the cookie too
        done = await reply(node, "alice@example.com", thread.addresses["alice"], "Logged in.")
        await page.locator(f'#inbox tr[data-id="{done.id}"]').wait_for()
        cookies = await page.context.cookies()
        [cookie] = [c for c in cookies if c["name"] == "mailbot_token"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        # Without the cookie, the API says 401 and the page sends people to the form.
        anonymous = await browser.new_page(base_url=f"http://127.0.0.1:{node.http_port}")
        answer = await anonymous.request.get("/api/messages")
        assert answer.status == 401
        await anonymous.goto(f"/messages/{done.id}")
        assert anonymous.url.endswith("/login")


async def test_the_api_docs_render_from_our_own_files(node: Node, browser: Browser) -> None:
    page = await _page(browser, node)
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(_url(r)))
    page.on("console", lambda m: errors.append(_text(m)) if m.type == "error" else None)
    await page.goto("/docs")
    await page.locator(
        ".opblock-summary-path", has_text="/api/conversations/{key}/reply-address"
    ).first.wait_for()
    await page.wait_for_load_state("networkidle")
    assert not [u for u in requests if not u.startswith(f"http://127.0.0.1:{node.http_port}/")]
    assert errors == []


async def test_the_message_page_says_which_rule_cut_the_quote_and_the_signature(
    node: Node, browser: Browser
) -> None:
    thread = await make_thread(node, people=("alice", "bob"))
    body = (
        "Fixed it with a paperclip.\n\n-- \nAlice Example\nHead of Printers\n\n"
        "On Mon, 23 Nov 2026 at 10:00, Bob <bob@example.com> wrote:\n> It is on fire.\n"
    )
    row = await reply(node, "alice@example.com", thread.addresses["alice"], body)
    assert row.outcome is not None and row.outcome["cut"]["quote"].startswith("the attribution")
    page = await _page(browser, node)
    await page.goto(f"/messages/{row.id}")
    await page.locator("#quote-rule", has_text="On Mon, 23 Nov 2026").wait_for()
    await page.locator("#signature-rule", has_text="cut by").wait_for()
    await page.locator("#signature", has_text="Head of Printers").wait_for()
    assert "paperclip" not in await page.locator("#quote").inner_text()


async def test_a_temporary_address_made_by_a_click_shows_its_mail_as_it_arrives(
    node: Node, browser: Browser, tmp_path: Path
) -> None:
    page = await _page(browser, node)
    await page.goto("/")
    await page.locator("#live.on").wait_for()
    await page.click("#temporary-new")
    shown = page.locator("#temporary-address")
    await page.locator("#temporary-shown:not([hidden])").wait_for()
    address = (await shown.inner_text()).strip()
    assert address.endswith("@inspect.localhost")
    assert (await page.input_value("#q")).startswith("conversation:inspect-")
    await page.locator("#live.on").wait_for()

    raw = build_mail("someone@example.net", address, "Testing the inspector.", subject="Probe")
    sent = await smtp_send(node.smtp_port, "someone@example.net", [address], raw)
    row = page.locator(f'#inbox tr[data-id="{sent.inbound_id}"][data-status="delivered"]')
    await row.wait_for()
    text = await row.inner_text()
    assert "Probe" in text and "inspector" in text
    assert address.split("@")[0] not in text  # the address is redacted in the list
    await page.screenshot(path=_shots(tmp_path) / "inspector.png", full_page=True)


_RELAY_SEEN = "smtp://bot:pw-s3cret@relay.example"  # a URL with a password, as a bot might quote it


class _Broken(Bot):
    name = "broken"

    async def process(self, mail: InboundMail) -> None:
        # A careless bot quotes the live reply address in its error: never shown as it is.
        raise RuntimeError(f"the ticket system is down (for {mail.rcpt_tos[0]} via {_RELAY_SEEN})")


async def test_a_handler_that_keeps_raising_is_failed_with_its_traceback_on_page_api_and_cli(
    tmp_path: Path, browser: Browser
) -> None:
    broken = Mailbot(bots=[CommentsBot, _Broken])
    settings = settings_for(tmp_path, max_attempts=2, retry_base_seconds=0.05)
    async with running(settings, broken) as node:
        thread = await make_thread(node, people=("alice",), bot="broken")
        address = thread.addresses["alice"]
        raw = build_mail("alice@example.com", address, "hello")
        sent = await smtp_send(node.smtp_port, "alice@example.com", [address], raw)
        row = await wait_for_status(node.sessions, sent.inbound_id)
        assert (row.status.value, row.attempts) == ("failed", 2)
        where = 'down (for {mail.rcpt_tos[0]} via {_RELAY_SEEN})")'  # the raise, as written
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.http_port}") as http:
            api = (await http.get(f"/api/messages/{row.id}")).json()
        assert api["outcome"]["error"]["attempt"] == 2
        assert where in api["outcome"]["error"]["traceback"]
        page = await _page(browser, node)
        await page.goto(f"/messages/{row.id}")
        failure = page.locator("#failure #traceback", has_text="the ticket system is down")
        await failure.wait_for()
        shown = await failure.inner_text()
        assert where in shown and "RuntimeError: the ticket system is down" in shown
        assert address.split("@")[0] not in shown + json.dumps(api)
        assert "pw-s3cret" not in shown + json.dumps(api) and "smtp://bot:***@" in shown
        await page.screenshot(path=_shots(tmp_path) / "message-failed.png", full_page=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(MAILBOT_CONFIG="", MAILBOT_DATABASE_URL=settings.database_url)
    cli = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "mailbot", "message", str(row.id)),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    out = (await cli.communicate())[0].decode()
    assert f"message {row.id}: failed after 2 attempt(s)" in out
    assert "the handler raised (attempt 2):" in out and where in out
    assert "the ticket system is down (for reply+" in out
    assert address.split("@")[0] not in out and "pw-s3cret" not in out
