"""One-click unsubscribe (RFC 8058) over real SMTP and HTTP: the headers a notification
carries, the signed link, GET that only asks, POST that mutes, forged links refused."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from mailbot.bots.default import app
from mailbot.config import Settings
from mailbot.outbound.unsubscribe import link
from mailbot.serve import running
from mailbot.store.db import Sessions
from mailbot.store.models import Participant
from mailbot.testing import SmtpSink, make_thread, reply, settings_for
from tests.test_cli import _free_port


async def _muted(sessions: Sessions, email: str) -> bool:
    async with sessions() as session:
        person = await session.scalar(select(Participant).where(Participant.email == email))
    assert person is not None
    return person.muted_at is not None


async def test_a_notification_can_be_stopped_in_one_click(tmp_path: Path, sink: SmtpSink) -> None:
    port = _free_port()
    settings = settings_for(tmp_path, sink, http_port=port, public_url=f"http://127.0.0.1:{port}")
    async with running(settings, app) as node, httpx.AsyncClient() as http:
        thread = await make_thread(node, people=("ann", "bo"))
        await reply(node, "ann@example.com", thread.addresses["ann"], "First")
        [told] = await sink.wait_for(1)
        assert told.rcpt_tos == ["bo@example.com"]
        link = re.fullmatch(r"<(.+)>", told.message["List-Unsubscribe"])
        assert link is not None and link.group(1).startswith(
            f"http://127.0.0.1:{port}/unsubscribe/"
        )
        assert told.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert told.message["List-Id"] == f"<conversation-{thread.conversation.id}.localhost>"
        url = link.group(1)

        # A scanner following the link changes nothing; forged links are not ours.
        page = await http.get(url)
        assert page.status_code == 200 and "<form method=post>" in page.text
        assert not await _muted(node.sessions, "bo@example.com")
        ref = url.rsplit("/", 1)[1]
        ann_id = thread.participants["ann"].id
        for forged in (
            ref[:-1] + ("0" if ref[-1] != "0" else "1"),
            f"{ann_id}.{ref.split('.')[1]}",
        ):
            answer = await http.post(
                url.replace(ref, forged), data={"List-Unsubscribe": "One-Click"}
            )
            assert answer.status_code == 404
        assert not await _muted(node.sessions, "ann@example.com")

        # What a mail provider's button sends (RFC 8058 §3.2): no cookie, no token, no Origin.
        done = await http.post(url, data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200 and "Unsubscribed" in done.text
        assert await _muted(node.sessions, "bo@example.com")

        await reply(node, "ann@example.com", thread.addresses["ann"], "Second")
        await reply(node, "bo@example.com", thread.addresses["bo"], "/help")  # an answer to bo
        mails = await sink.wait_for(2)
        # Nothing for "Second": the next mail bo got is the answer to their own /help, which
        # is not a notification, so it offers no unsubscribe either.
        assert [m.rcpt_tos for m in mails] == [["bo@example.com"], ["bo@example.com"]]
        assert "What became of the commands" in mails[1].text
        assert mails[1].message["List-Unsubscribe"] is None

        # An app's own notification to bo (the API) honours the unsubscribe too: kept, unsent.
        note = {"email": "bo@example.com", "subject": "News", "body": "Anything new?"}
        key = thread.conversation.key
        queued = await http.post(
            f"{url.split('/unsubscribe/')[0]}/api/conversations/{key}/notify", json=note
        )
        assert queued.status_code == 201
        assert (queued.json()["status"], queued.json()["reason"]) == (
            "suppressed",
            "not sent: the participant unsubscribed from this conversation",
        )


async def test_without_a_public_url_no_link_is_offered(tmp_path: Path, sink: SmtpSink) -> None:
    async with running(settings_for(tmp_path, sink), app, http=False) as node:
        thread = await make_thread(node, people=("ann", "bo"))
        await reply(node, "ann@example.com", thread.addresses["ann"], "Hi")
        [told] = await sink.wait_for(1)
        assert told.message["List-Unsubscribe"] is None and told.message["List-Id"] is not None


def test_a_line_break_in_the_public_url_never_reaches_a_header(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {"public_url": "https://a.example/\r\nBcc: x@evil.example", "home": tmp_path}
    )
    made = link(settings, 5)
    assert made is not None and "\r" not in made and "\n" not in made and " " not in made
    with pytest.raises(ValidationError):
        Settings.model_validate({"public_url": "javascript:alert(1)"})
