"""I/O: one TCP connection to an SMTP server, each reply kept exactly as it came.

Our own small asyncio protocol rather than a client library's: a prober needs what a mail
client hides (the exact bytes of each reply, data nobody asked for, replies that break the
grammar or the limits) as values (`Raw`, `Failure`), never as exceptions, and reads each
reply under RFC 5321 §4.2's grammar. Nothing here knows about steps, sessions or what a
reply means.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

from probe.cache import Bounded
from probe.messages import msg
from probe.result import ErrorKind

WIRE_LIMIT = 64 * 1024  # bytes of unsolicited data kept per connection; the rest is counted
MAX_LINE = 8192  # bytes in one reply line (RFC 5321 asks servers for 512; some send more)
MAX_REPLY = 4 * MAX_LINE  # bytes in one reply, continuation lines included
MAX_LINES = 1000  # lines in one reply
NOT_A_REPLY = msg("wire.not_a_reply")
CLOSED_BY_SERVER = msg("wire.closed_by_server")
TOO_LONG = msg("wire.too_long")
# Replies up to this long are remembered by their bytes (`Known`); a longer one is rarely
# sent twice, and keeping it would only cost memory.
KNOWN_LONGEST = 1024


class Raw(NamedTuple):
    """A reply: its code, its text (the lines after their codes), and the bytes received."""

    code: int
    message: str
    data: bytes


class Failure(NamedTuple):
    """Why an exchange got no reply."""

    kind: ErrorKind
    detail: str


class TlsStart(NamedTuple):
    """STARTTLS: the server's reply (if any), and why the handshake failed (if it did)."""

    reply: Raw | None
    failure: Failure | None


class _Bad(Exception):
    """A reply that breaks the grammar or the limits."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


def elapsed_ms(start: float) -> float:
    """Milliseconds since `start` (a time.perf_counter()), to a tenth. Not round(x, 1): that
    formats the number and parses it back, a dozen times a session; near a half-way case a
    measured time may come out a tenth off, which says nothing less."""
    return round((time.perf_counter() - start) * 10_000) / 10


def _code(line: bytes) -> int:
    """The code of a reply line: three digits, the first 2-5 and the second 0-5, then a space,
    a hyphen or the end of the line (RFC 5321 §4.2). int() would take " 220", "+22" or "2_2"."""
    head, sep = line[:3], line[3:4]
    if not (
        len(head) == 3
        and 0x32 <= head[0] <= 0x35
        and 0x30 <= head[1] <= 0x35
        and 0x30 <= head[2] <= 0x39
        and sep in (b" ", b"-", b"\r", b"\n")
    ):
        raise _Bad(Failure(ErrorKind.PROTOCOL, NOT_A_REPLY))
    return (head[0] - 0x30) * 100 + (head[1] - 0x30) * 10 + (head[2] - 0x30)


# A whole reply at the start of a buffer, each line in the grammar of `_code`: continuation
# lines ("250-"), then a last line ("250", then a space, CR or its end). Linear: a line is
# taken up to its newline, and what ends a continuation line cannot end a last one.
_WHOLE = re.compile(rb"(?:[2-5][0-5][0-9]-[^\n]*+\n)*+[2-5][0-5][0-9](?:[ \r][^\n]*+)?+\n")


def parse_reply(buffer: bytes | bytearray) -> tuple[Raw, int] | None:
    """The first whole reply in `buffer` and how many bytes it took; None while incomplete.

    A reply's code is its last line's, as clients read it; a line or a reply over the limits,
    or a line outside the grammar, raises `_Bad`."""
    # The common case in one pass of the regex engine (an EHLO reply's six lines took 10 us
    # line by line); anything else, including every error, goes the line-by-line way.
    found = _WHOLE.match(buffer)
    if found is not None:
        end = found.end()
        data = bytes(buffer[:end])
        if end <= MAX_LINE and data.count(b"\n") == 1:  # one line: most replies
            line = data[4:].strip(b" \t\r\n")
            return Raw(int(data[:3]), line.decode("utf-8", "surrogateescape"), data), end
        lines = data.split(b"\n")
        lines.pop()  # after the last newline
        if len(lines) <= MAX_LINES and max(map(len, lines)) < MAX_LINE:
            text = b"\n".join([line[4:].strip(b" \t\r") for line in lines])
            return Raw(int(lines[-1][:3]), text.decode("utf-8", "surrogateescape"), data), end
    return parse_lines(buffer)


def parse_lines(buffer: bytes | bytearray) -> tuple[Raw, int] | None:
    """`parse_reply` line by line: the reference its fast path is tested against."""
    offset = lines = 0
    message: list[bytes] = []
    while (end := buffer.find(b"\n", offset)) != -1:
        line = bytes(buffer[offset : end + 1])
        if len(line) > MAX_LINE:
            raise _Bad(Failure(ErrorKind.TOO_LONG, TOO_LONG))
        code = _code(line)
        offset, lines = end + 1, lines + 1
        message.append(line[4:].strip(b" \t\r\n"))
        if line[3:4] != b"-":
            text = b"\n".join(message).decode("utf-8", "surrogateescape")
            return Raw(code, text, bytes(buffer[:offset])), offset
        if lines >= MAX_LINES:
            raise _Bad(Failure(ErrorKind.TOO_LONG, TOO_LONG))
    if len(buffer) - offset > MAX_LINE or len(buffer) > MAX_REPLY:
        raise _Bad(Failure(ErrorKind.TOO_LONG, TOO_LONG))
    return None


Known = Bounded[bytes, Raw]
"""Replies already parsed, by their exact bytes: a run's servers send the same greetings,
EHLO lists and 250s again and again, each in one piece."""


class ReplyProtocol(asyncio.Protocol):
    """Bytes in, replies out: one reply awaited at a time; anything else is unsolicited."""

    def __init__(self, known: Known | None = None) -> None:
        self.known = known
        # Made by the running loop's create_connection. Kept: in CPython 3.11 every
        # get_running_loop() is a getpid() system call, and a session reads a dozen replies.
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Raw | Failure] | None = None
        # Settled when the transport is gone (a future, not an Event: one per connection).
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.unsolicited = bytearray()
        self.unsolicited_total = 0
        # The awaited reply is overdue at `_due` (loop time), after `_allowed` seconds; the
        # timer fires at `_armed`, never later than `_due`.
        self._due = self._allowed = self._armed = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        # A new connection: the greeting is due. (A loop that calls this again after
        # STARTTLS finds the STARTTLS reply's waiter, settled: EHLO's `expect` comes next.)
        if self.waiter is None:
            self.expect()

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            self._keep(data)  # nobody asked: kept for the record, never taken as a reply
            return
        known = self.known
        if known is not None and not self.buffer and len(data) <= KNOWN_LONGEST:
            raw = known.get(data)
            if raw is not None:  # these bytes, alone, were one whole reply before
                waiter.set_result(raw)
                return
        self.buffer += data
        # find(), not `in`: `needle in bytes` first tries the needle as an integer, and builds
        # (and drops) a TypeError with its message every time.
        if data.find(b"\n") < 0 and len(self.buffer) <= MAX_LINE:
            return  # no line completed (a server that drips bytes costs no parsing)
        try:
            got = parse_reply(self.buffer)
        except _Bad as bad:
            del self.buffer[:]
            waiter.set_result(bad.failure)
            return
        if got is None:
            return
        raw, used = got
        if len(self.buffer) > used:
            # We never pipeline: bytes past the reply were not asked for; left in the buffer
            # they would be taken as the answer to our next command (RFC 3207 §5 too).
            self._keep(bytes(self.buffer[used:]))
        elif known is not None and used == len(data) <= KNOWN_LONGEST:
            known.put(raw.data, raw)  # the whole reply came in this piece, nothing more
        del self.buffer[:]
        waiter.set_result(raw)

    def eof_received(self) -> bool:
        self._gone()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone()
        self.transport = None
        if self._timer is not None:  # a pending timer would keep this protocol alive
            self._timer.cancel()
            self._timer = None
        _settle(self.lost)

    def _gone(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(Failure(ErrorKind.DISCONNECTED, CLOSED_BY_SERVER))

    def _keep(self, data: bytes) -> None:
        self.unsolicited_total += len(data)
        room = WIRE_LIMIT - len(self.unsolicited)
        if room > 0:
            self.unsolicited += data[:room]

    @property
    def is_connected(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def expect(self) -> None:
        """A reply is due: the bytes that come next are its."""
        self.buffer.clear()
        self.waiter = self.loop.create_future()

    def reply(self, timeout: float) -> Awaitable[Raw | Failure]:
        """The reply `expect` made ready for, or the failure that stands for it; call it once
        after each `expect` (a second call gets the same future). The future itself, not a
        coroutine around it: a batch reads tens of thousands of replies."""
        waiter = self.waiter
        if waiter is None:
            return _settled(Failure(ErrorKind.DISCONNECTED, CLOSED_BY_SERVER))
        # A timer that settles the waiter, rather than asyncio.timeout or wait_for: no
        # cancellation dance. One for the connection, not one per reply: armed for the first,
        # it is set again for what is left when it fires before a later reply is overdue (a
        # batch reads tens of thousands of replies, nearly all long before their timeout).
        self._due, self._allowed = self.loop.time() + timeout, timeout
        if self._timer is None or self._due < self._armed:  # (a shorter timeout than before)
            if self._timer is not None:
                self._timer.cancel()
            self._armed = self._due
            self._timer = self.loop.call_at(self._due, self._overdue)
        # Once settled (or cancelled with its awaiter) the waiter stays: whatever comes next
        # is unsolicited until `expect` makes a new one.
        return waiter

    def _overdue(self) -> None:
        self._timer = None
        waiter = self.waiter
        if waiter is None or waiter.done():
            return  # nothing awaited: the next reply arms a timer of its own
        if self.loop.time() < self._due:
            self._armed = self._due
            self._timer = self.loop.call_at(self._due, self._overdue)
            return
        waiter.set_result(Failure(ErrorKind.TIMEOUT, msg("wire.no_reply", seconds=self._allowed)))

    def send(self, data: bytes, timeout: float) -> Awaitable[Raw | Failure]:
        """Write one command; what comes back is its reply to await. A plain function, not a
        coroutine of its own: this runs for every command of every session."""
        if self.transport is None or self.transport.is_closing():
            return _settled(Failure(ErrorKind.DISCONNECTED, CLOSED_BY_SERVER))
        self.expect()
        self.transport.write(data)
        return self.reply(timeout)


async def _settled(value: Raw | Failure) -> Raw | Failure:
    return value


def ssl_detail(e: BaseException, timeout: float) -> str:
    if isinstance(e, ssl.SSLError):
        return msg("wire.tls_failed", reason=str(e.reason or e))
    if isinstance(e, TimeoutError | ConnectionAbortedError):
        return msg("wire.tls_timeout", seconds=timeout)
    return msg("wire.tls_failed", reason=str(e or type(e).__name__))


def _connect_failure(e: OSError, connect_timeout: float) -> Failure:
    if isinstance(e, TimeoutError):
        return Failure(ErrorKind.TIMEOUT, msg("wire.connect_timeout", seconds=connect_timeout))
    if isinstance(e, ConnectionRefusedError):
        return Failure(ErrorKind.REFUSED, msg("wire.connection_refused"))
    if isinstance(e, ssl.SSLError):
        return Failure(ErrorKind.TLS_FAILED, ssl_detail(e, connect_timeout))
    return Failure(ErrorKind.UNREACHABLE, e.strerror or str(e))


def _abort(transport: asyncio.BaseTransport) -> None:
    # uvloop's transports do not subclass asyncio's: ask for the method, not the type.
    abort = getattr(transport, "abort", None)
    if callable(abort):
        abort()


def _settle(lost: asyncio.Future[None]) -> None:
    if not lost.done():  # (cancelled with a close that was cancelled)
        lost.set_result(None)


def _give_up(transport: asyncio.BaseTransport, lost: asyncio.Future[None]) -> None:
    _abort(transport)
    _settle(lost)  # whether or not the transport still reports its end


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

    def __init__(self, proto: ReplyProtocol) -> None:
        self._proto: ReplyProtocol | None = proto
        self.tls = False
        # Called before a polite close, whoever closes: TLS 1.3 tickets arrive after the
        # handshake, so the last moment to keep one for resumption is just before closing.
        self.before_close: Callable[[Connection], None] | None = None
        # How long the connection took to set up, and the last STARTTLS handshake (ms).
        self.connect_ms = 0.0
        self.handshake_ms = 0.0

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
        local_address: str | None = None,
        known: Known | None = None,
    ) -> tuple[Connection | None, Raw | Failure]:
        """Connect (with a TLS handshake when `tls` is given) and read the greeting; replies
        in `known` are taken from it rather than parsed again."""
        loop = asyncio.get_running_loop()
        start = time.perf_counter()  # uvloop's loop.time() counts whole milliseconds
        try:
            # asyncio.timeout rather than wait_for: no extra task per connection.
            async with asyncio.timeout(connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: ReplyProtocol(known),
                    host=address,
                    port=port,
                    ssl=tls,
                    server_hostname=server_hostname if tls else None,
                    ssl_handshake_timeout=connect_timeout if tls else None,
                    local_addr=(local_address, 0) if local_address else None,
                )
        except OSError as e:  # TimeoutError and ssl.SSLError are OSErrors too
            return None, _connect_failure(e, connect_timeout)
        conn = cls(proto)
        conn.tls = tls is not None
        conn.connect_ms = elapsed_ms(start)
        try:
            got = await proto.reply(greeting_timeout)
        except BaseException:
            # Cancelled while waiting (the target's budget ran out): the caller has no
            # connection to abort yet, so it is dropped here.
            conn.abort()
            raise
        if isinstance(got, Failure):
            await conn.close()
            if got.kind is ErrorKind.TIMEOUT:
                detail = msg("wire.no_greeting", seconds=greeting_timeout)
                return None, Failure(ErrorKind.NO_GREETING, detail)
            return None, got
        return conn, got

    @property
    def sockname(self) -> Sequence[object] | None:
        """The local address and port; asked only when no HELO name is given (it is a system
        call). None once the connection is gone."""
        proto = self._proto
        if proto is None or proto.transport is None:
            return None
        try:
            found: Sequence[object] | None = proto.transport.get_extra_info("sockname")
        except (OSError, AttributeError):  # uvloop, its socket closed under it
            return None
        return found

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
        return await self.send_line(" ".join(args), timeout)

    async def send_line(self, line: str, timeout: float) -> Raw | Failure:
        """`command` with the command already one line (without its CRLF)."""
        if "\r" in line or "\n" in line:
            raise ValueError("a command must not hold CR or LF")  # callers check wire values
        proto = self._proto
        if proto is None or not proto.is_connected:
            return Failure(ErrorKind.DISCONNECTED, msg("wire.already_closed"))
        got = await proto.send(line.encode("utf-8") + b"\r\n", timeout)
        if isinstance(got, Failure):
            await self.close()
        return got

    async def starttls(
        self, ctx: ssl.SSLContext, server_hostname: str | None, timeout: float
    ) -> TlsStart:
        """STARTTLS and the handshake; a failed handshake closes the connection."""
        proto = self._proto
        if proto is None or not proto.is_connected:
            return TlsStart(None, Failure(ErrorKind.DISCONNECTED, msg("wire.closed")))
        got = await proto.send(b"STARTTLS\r\n", timeout)
        if isinstance(got, Failure):
            await self.close()
            return TlsStart(None, got)
        if got.code != 220:  # refused with a reply; the connection stays in plaintext
            return TlsStart(got, None)
        start = time.perf_counter()
        failed = await self._handshake(proto, ctx, server_hostname, timeout)
        self.handshake_ms = elapsed_ms(start)
        if failed is not None:
            await self.close()
            return TlsStart(got, failed)
        self.tls = True
        _quick_ack(proto.transport)
        return TlsStart(got, None)

    async def _handshake(
        self, proto: ReplyProtocol, ctx: ssl.SSLContext, name: str | None, timeout: float
    ) -> Failure | None:
        # Whatever came after the 220 was plaintext nobody asked for (RFC 3207 §5): the
        # protocol kept it as unsolicited, and nothing of it carries over into TLS.
        proto.buffer.clear()
        transport = proto.transport
        if transport is None or transport.is_closing():
            return Failure(ErrorKind.DISCONNECTED, CLOSED_BY_SERVER)
        try:
            new = await proto.loop.start_tls(
                transport, proto, ctx, server_hostname=name, ssl_handshake_timeout=timeout
            )
        except (OSError, ConnectionError) as e:  # ssl.SSLError and TimeoutError included
            return Failure(ErrorKind.TLS_FAILED, ssl_detail(e, timeout))
        if new is None:
            return Failure(ErrorKind.DISCONNECTED, CLOSED_BY_SERVER)
        proto.transport = new
        return None

    def ssl_object(self) -> ssl.SSLObject | None:
        proto = self._proto
        if proto is None or proto.transport is None:
            return None
        obj = proto.transport.get_extra_info("ssl_object")
        return obj if isinstance(obj, ssl.SSLObject) else None

    def abort(self) -> None:
        """Drop the connection at once, if it is still there."""
        self.before_close = None  # (see close)
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            _abort(proto.transport)

    async def close(self) -> None:
        """Close and wait until the transport is really gone (TLS shutdown included)."""
        # Dropped once called: the hook is a method of the dialogue that holds this
        # connection, and the cycle they make would otherwise wait for the garbage collector
        # (with all the session's steps) instead of going when the session does.
        hook, self.before_close = self.before_close, None
        if hook is not None and self._proto is not None:
            hook(self)
        proto, self._proto = self._proto, None
        if proto is None or proto.transport is None:
            return
        transport = proto.transport
        transport.close()
        if proto.lost.done():
            return
        # A timer rather than asyncio.timeout: one handle, no cancellation (once per session).
        timer = proto.loop.call_later(1.0, _give_up, transport, proto.lost)
        try:
            await proto.lost
        finally:
            timer.cancel()
