"""SMTP servers on loopback that the outbound tests tell to misbehave.

:class:`ScriptedSink` speaks just enough SMTP (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, and
STARTTLS when given a certificate) and answers each DATA from a script: ``"250"`` keeps the
mail, ``"451 ..."``/``"550 ..."`` refuse it, ``"hangup"`` closes the connection half way
through the data, ``"hang"`` reads the data and never answers. When the script runs out, it
keeps mail. ``delay`` slows every answer to DATA. It counts connections and records, per
mail, whether it came over TLS.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    connection: int  # which connection brought it, from 1


@dataclass
class ScriptedSink:
    script: list[str] = field(default_factory=list)  # one answer per DATA, in order
    tls: ssl.SSLContext | None = None  # offer STARTTLS with this server context
    name: str = "sink.test"
    delay: float = 0.0  # seconds between the end of the data and the answer
    received: list[Received] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)  # what each DATA got
    connections: int = 0
    in_data: int = 0  # DATA dialogues under way now
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _sessions: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> ScriptedSink:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._sessions):
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                await asyncio.sleep(0.02)
        return self.received

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        secure = False
        try:
            writer.write(f"220 {self.name} ESMTP\r\n".encode())
            mail_from, rcpts = "", list[str]()
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    offer = self.tls is not None and not secure
                    extensions = ["PIPELINING", "8BITMIME", *(["STARTTLS"] if offer else [])]
                    lines = [self.name, *extensions]
                    out = "".join(f"250-{x}\r\n" for x in lines[:-1]) + f"250 {lines[-1]}\r\n"
                    writer.write(out.encode())
                elif verb == b"STAR" and self.tls is not None and not secure:
                    writer.write(b"220 go ahead\r\n")
                    await writer.drain()
                    await writer.start_tls(self.tls)
                    secure = True
                elif verb == b"MAIL":
                    mail_from, rcpts = _address(line), []
                    writer.write(b"250 ok\r\n")
                elif verb == b"RCPT":
                    rcpts.append(_address(line))
                    writer.write(b"250 ok\r\n")
                elif verb == b"DATA":
                    answer = self.script.pop(0) if self.script else "250"
                    writer.write(b"354 end with .\r\n")
                    await writer.drain()
                    if answer == "hangup":
                        await reader.readline()  # the first line of the data, then gone
                        self.answered.append(answer)
                        return
                    self.in_data += 1
                    try:
                        data = await _data(reader)
                        await asyncio.sleep(self.delay)
                    finally:
                        self.in_data -= 1
                    if data is None:
                        return  # the client went away before the final dot: nothing taken
                    self.answered.append(answer)
                    if answer == "hang":
                        await asyncio.sleep(3600)
                    if answer.startswith("250"):
                        self.received.append(Received(mail_from, rcpts, data, secure, number))
                        writer.write(b"250 2.0.0 kept\r\n")
                    else:
                        writer.write(f"{answer}\r\n".encode())
                elif verb == b"RSET":
                    mail_from, rcpts = "", list[str]()
                    writer.write(b"250 ok\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"250 ok\r\n")  # NOOP and the rest
                await writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            self._sessions.discard(task)
            writer.close()


def _address(line: bytes) -> str:
    text = line.decode("utf-8", "replace")
    start, end = text.find("<"), text.find(">")
    return text[start + 1 : end] if 0 <= start < end else ""


async def _data(reader: asyncio.StreamReader) -> bytes | None:
    """The data up to the final dot; None if the connection ended before it."""
    lines = []
    while (line := await reader.readline()) != b".\r\n":
        if not line:
            return None
        lines.append(line[1:] if line.startswith(b"..") else line)
    return b"".join(lines)
