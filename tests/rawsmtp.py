"""A minimal scripted SMTP server for CLI tests on loopback: fixed replies, and a record of
every command line the client sent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from probe.lab.dns import LoopThread
from probe.lab.smtp import port_of, start_raw


@dataclass
class Server:
    ehlo: tuple[str, ...] = ("PIPELINING", "8BITMIME")
    rcpt: str = "250 2.1.5 ok"
    mail: str = "250 2.1.0 ok"
    seen: list[str] = field(default_factory=list)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mx.test ESMTP\r\n")
        while line := await reader.readline():
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            self.seen.append(text)
            verb = text.split(" ", 1)[0].upper()
            writer.write(self._answer(verb).encode() + b"\r\n")
            await writer.drain()
            if verb == "QUIT":
                return

    def _answer(self, verb: str) -> str:
        if verb == "EHLO":
            return "\r\n".join(
                ["250-mx.test", *(f"250-{k}" for k in self.ehlo[:-1]), f"250 {self.ehlo[-1]}"]
            )
        return {
            "MAIL": self.mail,
            "RCPT": self.rcpt,
            "RSET": "250 2.0.0 ok",
            "QUIT": "221 2.0.0 bye",
        }.get(verb, "502 5.5.1 not here")


@contextmanager
def serving(server: Server, host: str = "127.0.0.1") -> Iterator[int]:
    """The server's port while it listens on `host`."""
    lt = LoopThread()
    srv = lt.run(start_raw(server, host))
    try:
        yield port_of(srv)
    finally:
        lt.loop.call_soon_threadsafe(srv.close)
        lt.close()
