"""Delivery reports for mail we sent: who could not be reached, and for good or for now.

Every mail we send has its own return path, ``bounces+<random>@<domain>`` (VERP), stored on
its outbound row, so a bounce names the mail it is about even when the report itself is
unreadable. The report is read as RFC 3464 (``multipart/report; report-type=
delivery-status``: ``Action`` and ``Status`` per recipient) or, from mail systems that do
not write one, by the ``X-Failed-Recipients`` header (Exim: permanent failures).

- **hard** (``Action: failed``, status ``5.x.x``, or ``X-Failed-Recipients``): the
  participant is suspended (``bounced_at``); the outbox sends them nothing more.
- **soft** (``Action: delayed`` or a ``4.x.x`` status): counted (``soft_bounces``).

Both are kept in the report's own inbound row (``outcome.bounce``), shown by
``mailbot inbox --json`` and the API.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailbot import addresses
from mailbot.store.models import OutboundMessage, Participant, utcnow

_PARSER = BytesParser(policy=policy.compat32)  # compat32: lenient with broken reports


@dataclass(frozen=True)
class Failure:
    recipient: str
    hard: bool
    status: str  # the enhanced status code, e.g. 5.1.1
    diagnostic: str


@dataclass(frozen=True)
class Report:
    failures: list[Failure]
    original_message_id: str | None


def read_report(raw: bytes) -> Report:
    msg = _PARSER.parsebytes(raw)
    failures: list[Failure] = []
    original: str | None = None
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            failures.extend(_delivery_status(part))
        elif ctype in ("message/rfc822", "text/rfc822-headers") and original is None:
            original = _message_id_in(part)
    if not failures:
        failed = getaddresses([str(v) for v in msg.get_all("X-Failed-Recipients") or []])
        failures = [
            Failure(a.lower(), True, "5.0.0", "X-Failed-Recipients") for _, a in failed if a
        ]
    return Report(failures, original)


def _delivery_status(part: Message) -> list[Failure]:
    blocks = part.get_payload()
    if not isinstance(blocks, list):
        return []
    out: list[Failure] = []
    for block in blocks:
        if not isinstance(block, Message) or block.get("Final-Recipient") is None:
            continue  # the first block is about the message, not a recipient
        action = str(block.get("Action", "")).strip().lower()
        status = str(block.get("Status", "")).strip().split(" ")[0]
        if action not in ("failed", "delayed"):
            continue  # delivered, relayed, expanded: not a problem
        recipient = str(block.get("Final-Recipient", "")).rpartition(";")[2].strip().strip("<>")
        diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).split())
        hard = action == "failed" and not status.startswith("4")
        out.append(Failure(recipient.lower(), hard, status, diagnostic[:500]))
    return out


def _message_id_in(part: Message) -> str | None:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        value = payload[0].get("Message-ID")
    else:
        text = payload if isinstance(payload, str) else ""
        value = _PARSER.parsebytes(text.encode("utf-8", "replace"), headersonly=True).get(
            "Message-ID"
        )
    return str(value).strip() if value else None


async def record(
    session: AsyncSession, raw: bytes, rcpt_tos: list[str], domains: frozenset[str]
) -> dict[str, Any]:
    """Apply a delivery report to the participant it is about; the outcome to store."""
    report = read_report(raw)
    sent = await _sent_mail(session, rcpt_tos, domains, report.original_message_id)
    outcome: dict[str, Any] = {
        "failures": [asdict(f) for f in report.failures],
        "outbound_id": sent.id if sent else None,
        "participant_id": sent.participant_id if sent else None,
        "type": "none",
    }
    if sent is None or not report.failures:
        return outcome
    about = [f for f in report.failures if f.recipient == sent.recipient.lower()]
    failure = (about or report.failures)[0]
    outcome["type"] = "hard" if failure.hard else "soft"
    outcome["recipient"] = sent.recipient
    participant = (
        await session.get(Participant, sent.participant_id) if sent.participant_id else None
    )
    if participant is not None:
        if failure.hard:
            participant.bounced_at = participant.bounced_at or utcnow()
            participant.bounce_reason = f"{failure.status} {failure.diagnostic}".strip()[:1000]
        else:
            participant.soft_bounces += 1
        outcome["soft_bounces"] = participant.soft_bounces
    return outcome


async def _sent_mail(
    session: AsyncSession, rcpt_tos: list[str], domains: frozenset[str], original: str | None
) -> OutboundMessage | None:
    verps = [r.strip("<>").lower() for r in rcpt_tos if _is_our_return_path(r, domains)]
    conditions: list[ColumnElement[bool]] = []
    if verps:
        conditions.append(func.lower(OutboundMessage.mail_from).in_(verps))
    if original:
        conditions.append(OutboundMessage.message_id == original)
    if not conditions:
        return None
    found = await session.scalar(
        select(OutboundMessage).where(or_(*conditions)).order_by(OutboundMessage.id.desc()).limit(1)
    )
    return found


def _is_our_return_path(address: str, domains: frozenset[str]) -> bool:
    local, domain = addresses.split(address)
    return domain in domains and addresses.bounce_id_from_local_part(local) is not None


def summary(outcome: dict[str, Any]) -> str:
    """The reason stored on the report's row, in words."""
    if outcome.get("outbound_id") is None:
        return "not about any mail we sent; ignored"
    if outcome["type"] == "hard":
        return f"hard bounce for {outcome['recipient']}: sending to them is suspended"
    if outcome["type"] == "soft":
        return f"soft bounce for {outcome['recipient']} (counted: {outcome.get('soft_bounces')})"
    return "no failed recipient in the report"
