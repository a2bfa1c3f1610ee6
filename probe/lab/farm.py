"""A farm of loopback MX servers for benchmarks: `python -m probe.lab.farm LISTENERS DOMAINS
[ERROR_LIMIT]` (ERROR_LIMIT: after that many 4xx/5xx replies in a session, each reply waits a
second, as Postfix's smtpd_soft_error_limit does).

Each listener (127.0.0.2, 127.0.0.3, ...) behaves like a real MX: a 220 greeting, EHLO with
STARTTLS and a certificate made at start, 250 for recipients and 550 5.1.1 for those starting
with "nobody". A DNS server on 127.0.0.1 maps d0.test ... d{DOMAINS-1}.test to them. Prints one
JSON line with the ports and the CA file, then serves until stdin closes.

Both sides are lean asyncio protocols rather than aiosmtpd and the zone server of
`probe.lab.dns`: the farm shares the machine with the clients it measures (ours and swaks
alike), so every millisecond it spends is taken from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any, cast


class FarmMX(asyncio.Protocol):
    """One SMTP session: enough of RFC 5321 and RFC 3207 for a probe that stops before DATA."""

    def __init__(self, name: str, ctx: ssl.SSLContext, error_limit: int = 0) -> None:
        self.name = name.encode()
        self.ctx = ctx
        # Postfix's smtpd_soft_error_limit: after this many 4xx/5xx replies in one session,
        # every reply waits a second (smtpd_error_sleep_time). 0: never.
        self.error_limit = error_limit
        self.errors = 0
        self.buf = b""
        self.tls = False
        # None: plain; "plain": STARTTLS answered, bytes before the handshake are dropped
        # (RFC 3207 section 4.2: nothing sent before TLS may carry over); "tls": handshaking.
        self.upgrading: str | None = None
        self.t: asyncio.Transport | None = None
        self._task: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = cast(asyncio.Transport, transport)
        self.t.write(b"220 " + self.name + b" ESMTP farm\r\n")

    def data_received(self, data: bytes) -> None:
        if self.upgrading == "plain":
            return
        self.buf += data
        if self.upgrading is None:
            self._drain()

    def _drain(self) -> None:
        while (i := self.buf.find(b"\n")) >= 0:
            line, self.buf = self.buf[:i].rstrip(b"\r"), self.buf[i + 1 :]
            if not self._line(line):
                return
        if len(self.buf) > 4096:
            self._reply(b"500 5.5.6 Line too long")
            self._close()

    def _reply(self, *lines: bytes) -> None:
        assert self.t is not None
        last = len(lines) - 1
        data = b"".join(
            line[:3] + (b" " if n == last else b"-") + line[4:] + b"\r\n"
            for n, line in enumerate(lines)
        )
        if self.error_limit and self.errors >= self.error_limit:
            asyncio.get_running_loop().call_later(1.0, self.t.write, data)
        else:
            self.t.write(data)
        if lines[0][:1] in (b"4", b"5"):
            self.errors += 1

    def _close(self) -> None:
        if self.t is not None:
            self.t.close()

    def _line(self, line: bytes) -> bool:
        """Answer one command; False when the session stops reading (QUIT, STARTTLS)."""
        verb = line[:8].split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            ext = [b"250 PIPELINING", b"250 SIZE 10240000", b"250 ENHANCEDSTATUSCODES"]
            if not self.tls:
                ext.append(b"250 STARTTLS")
            self._reply(b"250 " + self.name, *ext, b"250 8BITMIME")
        elif verb == b"HELO":
            self._reply(b"250 " + self.name)
        elif verb == b"STARTTLS" and not self.tls:
            self._reply(b"220 2.0.0 Ready to start TLS")
            self.upgrading = "plain"
            self.buf = b""
            self._task = asyncio.ensure_future(self._upgrade())  # kept: tasks are weakly held
            return False
        elif verb == b"MAIL":
            self._reply(b"250 2.1.0 Sender OK")
        elif verb == b"RCPT":
            addr = line.partition(b":")[2].strip().lstrip(b"<")
            if addr.lower().startswith(b"nobody"):
                self._reply(b"550 5.1.1 <nobody>: User unknown")
            else:
                self._reply(b"250 2.1.5 Recipient OK")
        elif verb in (b"RSET", b"NOOP"):
            self._reply(b"250 2.0.0 OK")
        elif verb == b"QUIT":
            self._reply(b"221 2.0.0 Bye")
            self._close()
            return False
        elif verb == b"DATA":
            self._reply(b"554 5.7.1 This test server never takes data")
        else:
            self._reply(b"502 5.5.2 Command not recognised")
        return True

    async def _upgrade(self) -> None:
        assert self.t is not None
        self.upgrading = "tls"
        try:
            new = await asyncio.get_running_loop().start_tls(
                self.t, self, self.ctx, server_side=True
            )
        except (OSError, ssl.SSLError, ConnectionError, asyncio.CancelledError):
            self._close()
            return
        if new is None:
            return
        self.t = new
        self.tls = True
        self.upgrading = None
        self._drain()


def _qname(wire: bytes) -> tuple[str, int] | None:
    """The first question's name (lower case, trailing dot) and the offset after its type/class."""
    labels = []
    i = 12
    try:
        while (n := wire[i]) != 0:
            if n > 63:
                return None
            labels.append(wire[i + 1 : i + 1 + n].decode("ascii").lower())
            i += 1 + n
    except (IndexError, UnicodeDecodeError):
        return None
    return ".".join(labels) + ".", i + 5


class FarmDNS(asyncio.DatagramProtocol):
    """Answers MX and A questions from two dicts; everything else is an empty NOERROR."""

    def __init__(self, mx: dict[str, str], a: dict[str, str]) -> None:
        self.mx = mx
        self.a = a

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        q = _qname(data)
        if q is None or len(data) < q[1]:
            return
        name, end = q
        qtype = struct.unpack("!H", data[end - 4 : end - 2])[0]
        answers: list[bytes] = []
        rcode = 0
        if name in self.mx:
            if qtype == 15:
                target = b"".join(
                    bytes([len(p)]) + p.encode() for p in self.mx[name].rstrip(".").split(".")
                )
                rdata = struct.pack("!H", 10) + target + b"\0"
                answers.append(struct.pack("!HHHIH", 0xC00C, 15, 1, 60, len(rdata)) + rdata)
        elif name in self.a:
            if qtype == 1:
                rdata = bytes(int(o) for o in self.a[name].split("."))
                answers.append(struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + rdata)
        else:
            rcode = 3
        flags = 0x8400 | (struct.unpack("!H", data[2:4])[0] & 0x0100) | rcode
        head = data[:2] + struct.pack("!HHHHH", flags, 1, len(answers), 0, 0)
        self.t.sendto(head + data[12:end] + b"".join(answers), addr)


def client_args(info: dict[str, Any]) -> list[str]:
    """`probe`/`batch` options that aim at the farm announced by `info` (its JSON line)."""
    return [
        "--nameserver",
        f"127.0.0.1:{info['dns_port']}",
        "--port",
        str(info["smtp_port"]),
        "--cafile",
        info["cafile"],
    ]


async def main(listeners: int, domains: int, error_limit: int = 0) -> None:
    import trustme

    ca = trustme.CA()
    hosts = [f"127.0.0.{i}" for i in range(2, 2 + listeners)]
    names = [f"mx{j}.farm.test" for j in range(listeners)]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(ctx)
    loop = asyncio.get_running_loop()
    mx = {f"d{i}.test.": f"{names[i % listeners]}." for i in range(domains)}
    dns_t, _ = await loop.create_datagram_endpoint(
        lambda: FarmDNS(mx, {f"{n}.": h for n, h in zip(names, hosts, strict=True)}),
        local_addr=("127.0.0.1", 0),
    )
    dns_port = dns_t.get_extra_info("sockname")[1]
    # A batch opens with hundreds of queries at once; with the default buffer (about 200 KB)
    # the kernel drops some while the farm is busy with handshakes, and every drop costs the
    # client a resolver timeout. Real resolvers keep bigger buffers; ask for 4 MB.
    sock = dns_t.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    port = 0
    servers = []
    for n, h in zip(names, hosts, strict=True):
        srv = await loop.create_server(
            lambda n=n: FarmMX(n, ctx, error_limit),  # type: ignore[misc]
            h,
            port,
            backlog=1024,
        )
        port = srv.sockets[0].getsockname()[1]
        servers.append(srv)
    tmp = Path(tempfile.mkdtemp(prefix="smtp-probe-farm-"))
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    print(
        json.dumps(
            {"dns_port": dns_port, "smtp_port": port, "cafile": str(tmp / "ca.pem"), "hosts": hosts}
        ),
        flush=True,
    )
    await loop.run_in_executor(None, sys.stdin.read)
    for s in servers:
        s.close()
    dns_t.close()


if __name__ == "__main__":
    args = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(*args))
    else:
        uvloop.run(main(*args))
