"""Reading DATA into one buffer.

aiosmtpd keeps each line of a message as an object of its own until the end, then joins
them: a 25 MiB message with 76-octet base64 lines costs about 3.7 times its size at the
moment of the join (measured in benchmarks/big_mail_memory.py). Here every line is added
to a single ``bytearray`` as it arrives, dot-unstuffed (RFC 5321 4.5.2), so the peak is the
message and one copy of it.

What a sender sees is aiosmtpd's: the limits are counted the same way, and a message over
the size limit or with a line over the line limit is read to its end and then refused with
aiosmtpd's own answer (RFC 5321 4.2.5: the answer comes after the data).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
TOO_MUCH = "552 Error: Too much mail data"


@dataclass
class Data:
    """The message as received (``content``), or why it is refused (``refusal``)."""

    content: bytes = b""
    refusal: str | None = None


async def read_data(reader: asyncio.StreamReader, size_limit: int | None, line_limit: int) -> Data:
    """Read up to the lone dot. ``size_limit`` counts the octets on the wire, as aiosmtpd
    does; None or 0 means no limit."""
    buffer = bytearray()
    received = 0
    refusal: str | None = None
    partial = False  # inside a line longer than the reader's limit
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as over:
            # Longer than the stream's own limit: drain it, refuse the message at the end.
            refusal = refusal or TOO_LONG
            line = await reader.read(over.consumed)
        except asyncio.IncompleteReadError as cut:
            raise ConnectionResetError("the connection closed during DATA") from cut
        if not partial and line == b".\r\n":
            break
        ended = line.endswith(b"\r\n")
        received += len(line)
        if refusal is None and size_limit and received > size_limit:
            refusal = TOO_MUCH
        if refusal is None and (partial or not ended or len(line) > line_limit):
            refusal = TOO_LONG
        if refusal is not None:
            buffer = bytearray()  # nothing more is kept of a refused message
        elif line.startswith(b"."):
            buffer += memoryview(line)[1:]
        else:
            buffer += line
        partial = not ended
    if refusal is not None:
        return Data(refusal=refusal)
    content = bytes(buffer)
    del buffer
    return Data(content)
