"""Outlook's ``winmail.dat`` (TNEF, application/ms-tnef): the files inside it, unpacked so a
bot gets them as attachments of their own (mailbot/store/attachments.py puts them beside
the ``winmail.dat``, which is kept as it came).

tnefparse does the decoding (each attribute, the MAPI properties, code pages, Outlook's long
file names). It trusts the counts it reads: a MAPI block saying it holds 4 billion
properties is looped over 4 billion times; and its own walk over the stream copies the rest
of the stream at every object. So :func:`_attachments` walks the objects itself (each one
copied once), keeps those that describe attachments and the code page (not the body, not the
recipients), and hands each to tnefparse's attachment decoder after following its MAPI
block as tnefparse will, reading only counts and lengths. A stream whose counts run past its
end, with more than :data:`MAX_OBJECTS` objects, or with an embedded Outlook message
(tnefparse would parse it whole, recipients and all) is not unpacked; what tnefparse does
is then linear in the stream's size. A stream refused, or one tnefparse fails on, unpacks
to nothing: the ``winmail.dat`` is still there, and why is in the parsed mail's defects.
"""

from __future__ import annotations

import logging
import mimetypes
import struct
from dataclasses import dataclass
from typing import Any

from tnefparse.codepage import Codepage  # type: ignore[import-untyped]
from tnefparse.tnef import TNEFAttachment, TNEFObject  # type: ignore[import-untyped]

MAX_TNEF_BYTES = 32 * 1024 * 1024  # a bigger winmail.dat is kept, not unpacked
MAX_OBJECTS = 4096  # top-level TNEF objects (an attachment is about six)
MAX_FILES = 256
TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})

_SIGNATURE = 0x223E9F78
_IMESSAGE = b"\x07\x03\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46"
_LEVEL_ATTACHMENT = 2
_ATTACHMENT_MAPI = 0x9005  # attAttachment: an attachment's MAPI properties
_STARTS_ATTACHMENT = 0x9002  # attAttachRendData
# With attAttachTitle (its 8.3 name) and attAttachData (its bytes): what makes a file.
_NEEDED = {_STARTS_ATTACHMENT, 0x8010, 0x800F, _ATTACHMENT_MAPI}
_CODEPAGE = 0x9007  # attOemCodepage
_FIXED = {0x0002: 2, 0x000B: 2, 0x0003: 4, 0x0004: 4, 0x000A: 4, 0x0048: 16}
_FIXED |= dict.fromkeys((0x0005, 0x0006, 0x0007, 0x0014, 0x0040), 8)
_VARIABLE = {0x0000, 0x001E, 0x001F, 0x000D, 0x0102}
_OBJECT = 0x000D
_u16 = struct.Struct("<H").unpack_from
_u32 = struct.Struct("<I").unpack_from

logging.getLogger("tnefparse").setLevel(logging.CRITICAL)  # hostile input is not news


class Refused(ValueError):
    """The stream is not one tnefparse may be given."""


@dataclass(frozen=True)
class File:
    filename: str
    content_type: str
    data: bytes


def is_tnef(content_type: str, filename: str | None) -> bool:
    return content_type.lower() in TNEF_TYPES or (filename or "").lower() == "winmail.dat"


def unpack(data: bytes) -> tuple[list[File], str | None]:
    """The files in ``data``, and why there are none when it could not be read."""
    try:
        if len(data) > MAX_TNEF_BYTES:
            raise Refused(f"over {MAX_TNEF_BYTES} bytes")
        attachments = _attachments(data)
    except Refused as exc:
        return [], f"winmail.dat not unpacked: {exc}"
    except Exception as exc:  # noqa: BLE001 - tnefparse on a broken stream raises anything
        return [], f"winmail.dat not unpacked: {type(exc).__name__}"
    files = []
    for attachment in attachments[:MAX_FILES]:
        content = attachment.data
        if not isinstance(content, bytes) or not content:
            continue
        name = _name(attachment)
        kind = mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
        files.append(File(name, kind, content))
    return files, None


def _name(attachment: Any) -> str:
    """Outlook's long file name, else the short one, else "attachment"."""
    try:
        name = _text(attachment.long_filename())
    except Exception:  # noqa: BLE001 - a short name that is not UTF-8 makes it raise
        name = ""
    return name or _text(getattr(attachment, "_name", b"")) or "attachment"


def _text(value: object) -> str:
    if isinstance(value, list):  # MAPI strings come as a list of values
        value = value[0] if value else ""
    if isinstance(value, bytes):
        value = value.decode("cp1252", "replace")  # Outlook's short names: its ANSI page
    return value.strip("\x00").strip() if isinstance(value, str) else ""


def _attachments(data: bytes) -> list[Any]:
    """tnefparse's attachments of ``data``: its object walk, made here over the objects that
    describe attachments (and the code page), each MAPI block checked before it reads it."""
    if len(data) < 6 or _u32(data, 0)[0] != _SIGNATURE:
        raise Refused("not a TNEF stream")
    found: list[Any] = []
    codepage = "cp1252"  # Outlook's default, until the stream names its own
    offset, objects = 6, 0
    while offset + 12 < len(data):  # as tnefparse walks: an object is 11 bytes or more
        objects += 1
        if objects > MAX_OBJECTS:
            raise Refused(f"more than {MAX_OBJECTS} objects")
        level, name = data[offset], _u16(data, offset + 1)[0]
        length = min(len(data) - offset, _u32(data, offset + 5)[0] + 11)
        if name == _CODEPAGE and length >= 15:
            codepage = Codepage(_u32(data, offset + 9)[0]).codepage()
        elif level == _LEVEL_ATTACHMENT and name in _NEEDED:
            if name == _ATTACHMENT_MAPI:
                _mapi(data[offset + 9 : offset + length - 2])
            if name == _STARTS_ATTACHMENT:
                found.append(TNEFAttachment(codepage))
            if found:  # an attachment's attributes before its start: not an attachment
                found[-1].add_attr(TNEFObject(data[offset : offset + length], False))
        offset += length
    return found


def _mapi(data: bytes) -> None:
    """Follow a MAPI block as tnefparse's decode_mapi will: :class:`Refused` where a count
    runs past the end of ``data`` (where it would go on counting) or a value is an embedded
    message. Where it stops reading (a value cut short, an unknown type), this stops too."""
    end = len(data)
    if end < 4:
        return
    count, offset = _u32(data, 0)[0], 4
    for _ in range(count):
        if offset >= end:
            raise Refused("a MAPI count runs past the end")
        if offset + 4 > end:
            return
        kind, name = _u16(data, offset)[0], _u16(data, offset + 2)[0]
        offset += 4
        if name >= 0x8000:  # a named property: a GUID, then a number or a padded name
            if offset + 24 > end:
                return
            size = _u32(data, offset + 20)[0] if _u32(data, offset + 16)[0] else 0
            offset += 24 + size + (-size % 4)
        values = 0
        if kind & 0x1000:
            if offset + 4 > end:
                return
            values, kind, offset = _u32(data, offset)[0], kind ^ 0x1000, offset + 4
        found = _values(data, offset, kind, values)
        if found is None:
            return
        offset = found


def _values(data: bytes, offset: int, kind: int, multi: int) -> int | None:
    """Where the values of one property end; None where tnefparse stops reading."""
    end, values = len(data), multi or 1
    if kind in _FIXED:
        if values * _FIXED[kind] > end - offset + _FIXED[kind]:
            raise Refused("a MAPI value count runs past the end")
        return offset + values * _FIXED[kind] + (2 if kind in (2, 0xB) and values % 2 else 0)
    if kind not in _VARIABLE:
        return None  # tnefparse raises on an unknown type, and stops
    for _ in range(values):
        items = 1
        if not multi:
            if offset + 4 > end:
                return None
            items, offset = _u32(data, offset)[0], offset + 4
        for _ in range(items):
            if offset + 4 > end:
                return None  # tnefparse's next read fails: each value costs it 4 bytes
            size = _u32(data, offset)[0]
            if kind == _OBJECT and data[offset + 4 : offset + 20].startswith(_IMESSAGE):
                raise Refused("it holds an embedded Outlook message")
            offset += 4 + size + (-size % 4)
    return offset
