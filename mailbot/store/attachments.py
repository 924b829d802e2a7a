"""Attachments: their decoded bytes into the blob store, and their rows.

In the analyser process, :func:`put_attachments` walks the MIME tree the way
:func:`mailbot.parse.parse` does, decodes each part parse() lists as an attachment and puts it
in the blob store (mailbot/store/blobs.py), one at a time: the bytes are durable on disk before
anything names them, and only their keys (:class:`StoredAttachment`) go back to the node.
In the row's transaction, :func:`record` writes one ``attachments`` row each.

The analyser imports this module: the database parts are imported only where they are used,
so an analyser process never loads SQLAlchemy.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.message import Message
from email.policy import compat32
from io import BytesIO
from typing import TYPE_CHECKING, Any

# parse()'s own reading of the tree, so that the n-th part here is its n-th attachment.
from mailbot.decoding import header_start
from mailbot.parse import ParsedMail, _disposition, _payload, _Refused, _repair_boundary, _tree
from mailbot.screen import Limits
from mailbot.store import winmail
from mailbot.store.blobs import DirectoryStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy.ext.asyncio import AsyncSession

    from mailbot.store.blobs import BlobStore
    from mailbot.store.models import InboundAttachment


@dataclass(frozen=True)
class StoredAttachment:
    """An attachment whose decoded bytes are in the blob store under ``key``."""

    position: int  # its index in the parsed JSON's attachments
    filename: str | None  # cleaned: clean_filename
    content_type: str
    size: int
    sha256: str
    key: str
    # The position of the Outlook winmail.dat this file was unpacked from (mailbot/store/
    # winmail.py); its own position is then past those parse() lists. None: listed by parse().
    within: int | None = None


@dataclass(frozen=True)
class MailAttachment:
    """An attachment as a bot sees it: described at once, its bytes read on demand from the
    blob store (decoded, as the sender attached them)."""

    filename: str | None  # cleaned: no path, no control or direction character
    content_type: str
    size: int
    content_id: str | None  # without <>: the HTML shows it as ``cid:<content_id>``
    inline: bool  # shown in the body (an image in the HTML), not offered as a file
    blob: str | None = None  # its key in the blob store; None: not kept
    store: BlobStore | None = field(default=None, repr=False, compare=False)
    # A file unpacked from an Outlook winmail.dat: that winmail.dat's index in the list.
    within: int | None = None

    async def read(self) -> bytes:
        """The whole decoded attachment (``size`` bytes)."""
        if self.blob is None or self.store is None:
            raise FileNotFoundError(f"attachment {self.filename!r} was not kept")
        return await self.store.get(self.blob)

    async def stream(self) -> AsyncIterator[bytes]:
        """The decoded attachment in chunks, for one too big to hold at once."""
        if self.blob is None or self.store is None:
            raise FileNotFoundError(f"attachment {self.filename!r} was not kept")
        async for chunk in await self.store.reader(self.blob):
            yield chunk

    @classmethod
    def listed(
        cls, parsed: ParsedMail, kept: Sequence[StoredAttachment], store: BlobStore | None
    ) -> tuple[MailAttachment, ...]:
        """The parsed mail's attachments, each with its bytes' key in ``store`` when kept."""
        by_position = {stored.position: stored for stored in kept}
        found = []
        for position, part in enumerate(parsed.attachments):
            stored = by_position.get(position)
            disposition = (part.disposition or "").lower()
            found.append(
                cls(
                    filename=stored.filename if stored else clean_filename(part.filename),
                    content_type=part.content_type,
                    size=stored.size if stored else part.size,
                    content_id=part.content_id.strip("<> ") or None if part.content_id else None,
                    # An image the HTML refers to by Content-ID is inline, with or without a
                    # Content-Disposition (clients often send none).
                    inline=disposition == "inline"
                    or (part.content_id is not None and not disposition),
                    blob=stored.key if stored else None,
                    store=store if stored else None,
                )
            )
        for stored in kept:  # the files of a winmail.dat, after what the mail lists
            if stored.within is not None:
                found.append(
                    cls(
                        filename=stored.filename,
                        content_type=stored.content_type,
                        size=stored.size,
                        content_id=None,
                        inline=False,
                        blob=stored.key,
                        store=store,
                        within=stored.within,
                    )
                )
        return tuple(found)


# Controls (CR, LF, NUL, C1), bidirectional overrides (``txt.exe`` shown as ``exe.txt``) and
# path separators: none may reach a header, a file system or a person's screen.
_UNSAFE_IN_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069/\\]")
MAX_FILENAME = 200


def clean_filename(name: str | None) -> str | None:
    """A file name safe to store and to offer for download; None when nothing is left."""
    if name is None:
        return None
    name = _UNSAFE_IN_NAME.sub("_", name).strip().lstrip(".").strip()
    if len(name) > MAX_FILENAME:
        _stem, dot, ext = name.rpartition(".")
        ext = dot + ext if dot and len(ext) <= 16 else ""
        name = name[: MAX_FILENAME - len(ext)] + ext
    return name or None


def put_attachments(
    raw: bytes, limits: Limits, parsed: ParsedMail, store: DirectoryStore
) -> list[StoredAttachment]:
    """Each attachment ``parsed`` lists, decoded and put in ``store``, one in memory at a time."""
    stored: list[StoredAttachment] = []
    unpacked: list[StoredAttachment] = []  # from winmail.dat files: numbered after the rest
    listed = parsed.attachments
    for position, data in enumerate(_attachment_bytes(raw, limits)):
        if position >= len(listed):
            break  # the same reading cannot find more; never a row parse() does not show
        key = store.put_sync(data)
        meta = listed[position]
        stored.append(
            StoredAttachment(
                position=position,
                filename=clean_filename(meta.filename),
                content_type=meta.content_type,
                size=len(data),
                sha256=key,  # the directory store's key is the content's SHA-256
                key=key,
            )
        )
        if winmail.is_tnef(meta.content_type, meta.filename):
            unpacked += _unpacked(data, position, len(listed) + len(unpacked), parsed, store)
    return stored + unpacked


def _unpacked(
    data: bytes, container: int, after: int, parsed: ParsedMail, store: DirectoryStore
) -> list[StoredAttachment]:
    """The files of an Outlook winmail.dat, put in ``store`` as attachments of their own,
    numbered after those parse() lists (``after`` of them are there already)."""
    files, why = winmail.unpack(data)
    if why is not None:
        parsed.defects.append(why)
    found = []
    for n, file in enumerate(files):
        key = store.put_sync(file.data)
        found.append(
            StoredAttachment(
                position=after + n,
                filename=clean_filename(file.filename),
                content_type=file.content_type,
                size=len(file.data),
                sha256=key,
                key=key,
                within=container,
            )
        )
    return found


def _attachment_bytes(raw: bytes, limits: Limits) -> Iterator[bytes]:
    """The decoded bytes of the parts parse() lists as attachments, in its order (its
    ``_walk``): the first text/plain and text/html bodies are the text, an attached message
    is one attachment, every other leaf is one."""
    raw = raw[header_start(raw) :]  # where parse() starts too: blank lines before the header
    try:
        msg = _tree(raw, limits)
        msg = _repair_boundary(raw, msg, limits) or msg
    except _Refused:
        return
    bodies: set[str] = set()
    notes: dict[str, None] = {}
    todo: list[Message] = [msg]
    while todo:
        part = todo.pop()
        ctype = part.get_content_type()
        if part.is_multipart() and ctype == "message/rfc822":
            yield _flattened(part)
        elif part.is_multipart():
            subs = part.get_payload()
            if isinstance(subs, list):
                todo.extend(sub for sub in reversed(subs) if isinstance(sub, Message))
        elif (
            ctype in ("text/plain", "text/html")
            and _disposition(part, notes) != "attachment"
            and ctype not in bodies
        ):
            bodies.add(ctype)
        else:
            yield _payload(part, notes)


class _Generator(BytesGenerator):
    """BytesGenerator writes text as ASCII, keeping only the bytes the parser could not
    read (surrogates); a header it refolds can hold other characters, and then it raised on
    hostile mail. Those are written as UTF-8 here."""

    def write(self, s: str) -> None:
        self._fp.write(s.encode("utf-8", "surrogateescape"))  # type: ignore[attr-defined]


def _flattened(part: Message) -> bytes:
    inner = part.get_payload()
    out = BytesIO()
    for message in inner if isinstance(inner, list) else []:
        if isinstance(message, Message):
            _Generator(out, mangle_from_=False, policy=compat32).flatten(message)
    return out.getvalue()


# --- rows, in the message's transaction -----------------------------------------------------


async def record(
    session: AsyncSession, inbound_id: int, stored: Sequence[StoredAttachment]
) -> None:
    """Write the rows of one message's attachments, replacing those of an earlier run of the
    same message (reprocess, rescan). Their blobs are already durable: the analyser put them.
    Commits with the message's status (mailbot/pipeline/stages.py ``act``)."""
    from sqlalchemy import delete

    from mailbot.store.models import InboundAttachment

    await session.execute(
        delete(InboundAttachment).where(InboundAttachment.inbound_id == inbound_id)
    )
    session.add_all(
        InboundAttachment(
            inbound_id=inbound_id,
            position=item.position,
            filename=item.filename,
            content_type=item.content_type,
            size=item.size,
            sha256=item.sha256,
            blob_key=item.key,
        )
        for item in stored
    )


async def listed(session: AsyncSession, inbound_id: int) -> list[InboundAttachment]:
    from sqlalchemy import select

    from mailbot.store.models import InboundAttachment

    query = (
        select(InboundAttachment)
        .where(InboundAttachment.inbound_id == inbound_id)
        .order_by(InboundAttachment.position)
    )
    return list(await session.scalars(query))


async def one(session: AsyncSession, inbound_id: int, position: int) -> InboundAttachment | None:
    from sqlalchemy import select

    from mailbot.store.models import InboundAttachment

    return await session.scalar(
        select(InboundAttachment).where(
            InboundAttachment.inbound_id == inbound_id, InboundAttachment.position == position
        )
    )


async def of_messages(session: AsyncSession, ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """The attachments of these inbound messages, described (no bytes), by message id."""
    from sqlalchemy import select

    from mailbot.store.models import InboundAttachment

    found: dict[int, list[dict[str, Any]]] = {}
    if not ids:
        return found
    query = (
        select(InboundAttachment)
        .where(InboundAttachment.inbound_id.in_(ids))
        .order_by(InboundAttachment.inbound_id, InboundAttachment.position)
    )
    for row in await session.scalars(query):
        found.setdefault(row.inbound_id, []).append(
            {
                "position": row.position,
                "filename": row.filename,
                "content_type": row.content_type,
                "size": row.size,
            }
        )
    return found
