"""aiosmtpd servers on loopback with scripted replies, and raw asyncio servers for hostile ones."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

# aiosmtpd logs a traceback whenever a client aborts a TLS handshake, which the probe does on
# purpose; these lab servers stay quiet instead.
logging.getLogger("mail.log").setLevel(logging.CRITICAL)


class Scripted:
    """An aiosmtpd handler whose replies are chosen per address.

    rcpt: local part prefix -> reply line ("550 5.1.1 User unknown"); anything else gets 250.
    """

    def __init__(
        self,
        rcpt: dict[str, str] | None = None,
        mail: str | None = None,
        ehlo: list[str] | None = None,
        ehlo_reply: str | None = None,
    ) -> None:
        self.rcpt = rcpt or {}
        self.mail = mail
        self.ehlo = ehlo
        self.ehlo_reply = ehlo_reply
        self.seen: list[str] = []

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str] | str:
        self.seen.append(f"EHLO {hostname}")
        if self.ehlo_reply is not None:
            return [self.ehlo_reply]
        session.host_name = hostname
        return self.ehlo if self.ehlo is not None else responses

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        self.seen.append(f"HELO {hostname}")
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.seen.append(f"MAIL {address}")
        if self.mail is not None:
            return self.mail
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.seen.append(f"RCPT {address}")
        local = address.split("@")[0]
        for prefix, reply in self.rcpt.items():
            if local.startswith(prefix):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.seen.append("DATA")
        return "554 5.7.1 This test server never takes data"


class GreetingSMTP(SMTP):
    """aiosmtpd with a chosen greeting (421, 554, 521 ...): it answers 503 until QUIT."""

    def __init__(self, handler: Any, *, greeting: str | None = None, **kw: Any) -> None:
        super().__init__(handler, **kw)
        self._greeting = greeting

    async def _handle_client(self) -> None:
        if self._greeting is None:
            await super()._handle_client()
            return
        transport = self.transport
        assert transport is not None
        await self.push(self._greeting)
        if self._greeting.startswith("421"):
            transport.close()
            return
        try:
            while not transport.is_closing():
                line = await asyncio.wait_for(self._reader.readline(), 10)
                if not line:
                    break
                if line.strip().upper() == b"QUIT":
                    await self.push("221 2.0.0 Bye")
                    break
                await self.push("503 5.5.1 No SMTP service here, only QUIT")
        except (TimeoutError, ConnectionError):
            pass
        transport.close()


async def start_smtp(
    handler: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    greeting: str | None = None,
    tls_context: ssl.SSLContext | None = None,
    ssl_context: ssl.SSLContext | None = None,
    hostname: str = "mx.test",
    **kw: Any,
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: GreetingSMTP(
            handler,
            greeting=greeting,
            hostname=hostname,
            ident="smtp-probe test server",
            tls_context=tls_context,
            loop=loop,
            **kw,
        ),
        host,
        port,
        ssl=ssl_context,
    )


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def start_raw(script: Script, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """A raw TCP server running `script` per connection (for behaviour aiosmtpd cannot produce)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)
        except (ConnectionError, asyncio.CancelledError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
