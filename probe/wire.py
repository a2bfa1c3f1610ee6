"""I/O: one TCP connection to an SMTP server, each reply kept exactly as it came.

Built on aiosmtplib's protocol object, driven command by command, so that the greeting,
non-2xx replies and TLS failures come back as values (`Raw`, `Failure`) instead of being
raised. Nothing here knows about steps, sessions or what a reply means.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiosmtplib.errors import (
    SMTPException,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse

from probe.result import ErrorKind

WIRE_LIMIT = 64 * 1024  # bytes of unsolicited data kept per connection; the rest is counted


@dataclass(frozen=True, slots=True)
class Raw:
    """A reply: its code, aiosmtplib's reading of the text, and the bytes as received."""

    code: int
    message: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an exchange got no reply."""

    kind: ErrorKind
    detail: str


@dataclass(frozen=True, slots=True)
class TlsStart:
    """STARTTLS: the server's reply (if any), and why the handshake failed (if it did)."""

    reply: Raw | None
    failure: Failure | None


class RecordingProtocol(SMTPProtocol):
    """aiosmtplib's protocol, keeping the exact bytes of each reply it parses."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.lost = asyncio.Event()
        super().__init__(loop=loop, connection_lost_callback=lambda _p: self.lost.set())
        self.last_raw = b""
        self.unsolicited = bytearray()
        self.unsolicited_total = 0

    def data_received(self, data: bytes) -> None:
        waiter = self._response_waiter
        if waiter is not None and (not self._response_pending or waiter.done()):
            # aiosmtplib drops data nobody asked for; keep a bounded copy for the record.
            self._keep_unsolicited(data)
        super().data_received(data)

    def _read_response_from_buffer(self) -> SMTPResponse | None:
        before = bytes(self._buffer)
        response = super()._read_response_from_buffer()
        if response is not None:
            self.last_raw = before[: len(before) - len(self._buffer)]
            if self._buffer:
                # We never pipeline, so bytes past the reply were not asked for; left in the
                # buffer they would be taken as the answer to our next command.
                self._keep_unsolicited(bytes(self._buffer))
                del self._buffer[:]
        return response

    def _keep_unsolicited(self, data: bytes) -> None:
        self.unsolicited_total += len(data)
        room = WIRE_LIMIT - len(self.unsolicited)
        if room > 0:
            self.unsolicited += data[:room]


def ssl_detail(e: BaseException) -> str:
    if isinstance(e, ssl.SSLError):
        return f"TLS handshake failed: {e.reason or e}"
    return f"TLS handshake failed: {e}"


def failure(e: BaseException, command_timeout: float) -> Failure:
    """What an aiosmtplib or socket error means for the exchange that met it."""
    if isinstance(e, SMTPTimeoutError):
        return Failure(ErrorKind.TIMEOUT, f"no reply within {command_timeout:g} s")
    if isinstance(e, SMTPServerDisconnected):
        return Failure(ErrorKind.DISCONNECTED, "the server closed the connection")
    if isinstance(e, SMTPResponseException) and e.code == -1:
        if "too long" in e.message.lower():
            return Failure(ErrorKind.TOO_LONG, "reply too long")
        return Failure(ErrorKind.PROTOCOL, "the server sent something that is not an SMTP reply")
    if isinstance(e, ssl.SSLError):
        return Failure(ErrorKind.TLS_FAILED, ssl_detail(e))
    return Failure(ErrorKind.PROTOCOL, type(e).__name__)


def _connect_failure(e: OSError, connect_timeout: float) -> Failure:
    if isinstance(e, TimeoutError):
        return Failure(ErrorKind.TIMEOUT, f"no TCP connection within {connect_timeout:g} s")
    if isinstance(e, ConnectionRefusedError):
        return Failure(ErrorKind.REFUSED, "connection refused")
    if isinstance(e, ssl.SSLError):
        return Failure(ErrorKind.TLS_FAILED, ssl_detail(e))
    return Failure(ErrorKind.UNREACHABLE, e.strerror or str(e))


def _abort(transport: asyncio.BaseTransport) -> None:
    # uvloop's transports do not subclass asyncio's: ask for the method, not the type.
    abort = getattr(transport, "abort", None)
    if callable(abort):
        abort()


def _quick_ack(transport: asyncio.BaseTransport | None) -> None:
    # After the TLS handshake Postfix holds its next reply until the client acknowledges the
    # session ticket; a delayed ACK then costs ~40 ms per session. Linux only; not sticky.
    sock = transport.get_extra_info("socket") if transport is not None else None
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if sock is not None and quickack is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


class Connection:
    """One TCP connection (TLS from the start, or later by STARTTLS), command by command."""

    def __init__(self, proto: RecordingProtocol, sockname: Sequence[object] | None) -> None:
        self._proto: RecordingProtocol | None = proto
        self.sockname = sockname
        self.tls = False
        # Called before a polite close, whoever closes: TLS 1.3 tickets arrive after the
        # handshake, so the last moment to keep one for resumption is just before closing.
        self.before_close: Callable[[Connection], None] | None = None

    @classmethod
    async def open(
        cls,
        address: str,
        port: int,
        *,
        tls: ssl.SSLContext | None,
        server_hostname: str | None,
        connect_timeout: float,
        greeting_timeout: float,
    ) -> tuple[Connection | None, Raw | Failure]:
        """Connect (with a TLS handshake when `tls` is given) and read the greeting."""
        loop = asyncio.get_running_loop()
        proto = RecordingProtocol(loop)
        try:
            # asyncio.timeout rather than wait_for: no extra task per connection.
            async with asyncio.timeout(connect_timeout):
                transport, _ = await loop.create_connection(
                    lambda: proto,
                    host=address,
                    port=port,
                    ssl=tls,
                    server_hostname=server_hostname if tls else None,
                    ssl_handshake_timeout=connect_timeout if tls else None,
                )
        except OSError as e:  # TimeoutError and ssl.SSLError are OSErrors too
            return None, _connect_failure(e, connect_timeout)
        conn = cls(proto, transport.get_extra_info("sockname"))
        conn.tls = tls is not None
        try:
            resp = await proto.read_response(timeout=greeting_timeout)
        except SMTPTimeoutError:
            await conn.close()
            detail = f"connected, but no greeting within {greeting_timeout:g} s"
            return None, Failure(ErrorKind.NO_GREETING, detail)
        except (SMTPException, OSError) as e:
            await conn.close()
            return None, failure(e, greeting_timeout)
        return conn, Raw(resp.code, resp.message, proto.last_raw)

    @property
    def alive(self) -> bool:
        """Open on both ends."""
        return self._proto is not None and self._proto.is_connected

    @property
    def closed(self) -> bool:
        """Closed (or aborted) by us; a connection the server dropped is not, yet."""
        return self._proto is None

    @property
    def unsolicited_total(self) -> int:
        return self._proto.unsolicited_total if self._proto is not None else 0

    def unsolicited_tail(self, n: int) -> bytes:
        """The last of `n` unsolicited bytes that were kept."""
        if self._proto is None:
            return b""
        kept = self._proto.unsolicited
        return bytes(kept[-min(n, len(kept)) :])

    async def command(self, args: Sequence[str], timeout: float) -> Raw | Failure:
        """Send one command and read its reply; a failure closes the connection."""
        proto = self._proto
        if proto is None or not proto.is_connected:
            return Failure(ErrorKind.DISCONNECTED, "the connection is already closed")
        try:
            resp = await proto.execute_command(*(a.encode("utf-8") for a in args), timeout=timeout)
        except (SMTPException, OSError) as e:
            await self.close()
            return failure(e, timeout)
        return Raw(resp.code, resp.message, proto.last_raw)

    async def starttls(
        self, ctx: ssl.SSLContext, server_hostname: str | None, timeout: float
    ) -> TlsStart:
        """STARTTLS and the handshake; a failed handshake closes the connection."""
        proto = self._proto
        if proto is None or not proto.is_connected:
            return TlsStart(None, Failure(ErrorKind.DISCONNECTED, "the connection is closed"))
        try:
            resp = await proto.start_tls(ctx, server_hostname=server_hostname, timeout=timeout)
        except SMTPResponseException as e:
            if e.code > 0:  # refused with a reply; the connection stays in plaintext
                return TlsStart(Raw(e.code, e.message, proto.last_raw), None)
            await self.close()
            return TlsStart(None, failure(e, timeout))
        except (SMTPException, OSError) as e:
            greeted = proto.last_raw.startswith(b"220")
            await self.close()
            if not greeted:
                return TlsStart(None, failure(e, timeout))
            why = Failure(ErrorKind.TLS_FAILED, ssl_detail(e))
            return TlsStart(Raw(220, "", proto.last_raw), why)
        self.tls = True
        _quick_ack(proto.transport)
        return TlsStart(Raw(resp.code, resp.message, proto.last_raw), None)

    def ssl_object(self) -> ssl.SSLObject | None:
        proto = self._proto
        if proto is None or proto.transport is None:
            return None
        obj = proto.transport.get_extra_info("ssl_object")
        return obj if isinstance(obj, ssl.SSLObject) else None

    def abort(self) -> None:
        """Drop the connection at once, if it is still there."""
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            _abort(proto.transport)

    async def close(self) -> None:
        """Close and wait until the transport is really gone (TLS shutdown included)."""
        if self.before_close is not None and self._proto is not None:
            self.before_close(self)
        proto, self._proto = self._proto, None
        if proto is None or proto.transport is None:
            return
        transport = proto.transport
        transport.close()
        try:
            async with asyncio.timeout(1.0):
                await proto.lost.wait()
        except TimeoutError:
            _abort(transport)
