"""A DNS server on loopback that answers from zone text, over UDP and TCP on one port.

Faults a real server makes hard are switches: SERVFAIL, silence and forced truncation per name.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

T = TypeVar("T")


@dataclass
class Behaviour:
    servfail: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    notimp: set[str] = field(default_factory=set)
    authenticated: set[str] = field(default_factory=set)
    silent: set[str] = field(default_factory=set)
    truncate: set[str] = field(default_factory=set)
    # SERVFAIL unless the query sets CD: what a validating resolver does for a bogus answer.
    bogus: set[str] = field(default_factory=set)
    # An empty, non-authoritative answer with a referral: a server that does not hold the name.
    lame: set[str] = field(default_factory=set)
    tcp: bool = True
    queries: list[tuple[str, str, str]] = field(default_factory=list)


def _norm(name: str) -> str:
    return name.lower().rstrip(".") + "."


class ZoneDNS:
    """Answers from `zone_text` (absolute names, origin "."); see Behaviour for faults."""

    def __init__(self, zone_text: str, behaviour: Behaviour | None = None) -> None:
        self.zone = dns.zone.from_text(zone_text, origin=".", relativize=False, check_origin=False)
        self.b = behaviour or Behaviour()
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    def answer(self, wire: bytes, tcp: bool) -> bytes | None:
        try:
            q = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        question = q.question[0]
        name, rdtype = question.name, question.rdtype
        key = _norm(name.to_text())
        self.b.queries.append((key, dns.rdatatype.to_text(rdtype), "tcp" if tcp else "udp"))
        if key in self.b.silent:
            return None
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA
        if key in self.b.servfail or (key in self.b.bogus and not q.flags & dns.flags.CD):
            r.set_rcode(dns.rcode.SERVFAIL)
            return r.to_wire()
        if key in self.b.lame:
            r.flags &= ~(dns.flags.AA | dns.flags.RA)
            r.authority.append(dns.rrset.from_text(".", 60, "IN", "NS", "ns.elsewhere.test."))
            return r.to_wire()
        if key in self.b.refused:
            r.set_rcode(dns.rcode.REFUSED)
            return r.to_wire()
        if key in self.b.notimp:
            r.set_rcode(dns.rcode.NOTIMP)
            return r.to_wire()
        if key in self.b.authenticated and q.flags & dns.flags.AD:
            r.flags |= dns.flags.AD
        if key in self.b.truncate and not tcp:
            r.flags |= dns.flags.TC
            return r.to_wire()
        self._fill(r, name, rdtype, depth=0)
        if tcp:
            return r.to_wire()
        try:
            return r.to_wire(max_size=512)
        except dns.exception.TooBig:
            r.answer.clear()
            r.flags |= dns.flags.TC
            return r.to_wire()

    def _fill(
        self,
        r: dns.message.Message,
        name: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        depth: int,
    ) -> None:
        node = self.zone.get_node(name)
        if node is None:
            if depth == 0:
                r.set_rcode(dns.rcode.NXDOMAIN)
            return
        rds = node.get_rdataset(dns.rdataclass.IN, rdtype)
        if rds is not None:
            r.answer.append(dns.rrset.from_rdata_list(name, rds.ttl, list(rds)))
            return
        cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is not None and rdtype != dns.rdatatype.CNAME and depth < 8:
            r.answer.append(dns.rrset.from_rdata_list(name, cname.ttl, list(cname)))
            self._fill(r, next(iter(cname)).target, rdtype, depth + 1)

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        server = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.t = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                out = server.answer(data, tcp=False)
                if out is not None:
                    self.t.sendto(out, addr)  # type: ignore[attr-defined]

        for attempt in range(20):
            transport, _ = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", 0))
            self.port = transport.get_extra_info("sockname")[1]
            if not self.b.tcp:
                break
            try:
                # DNS uses one port number for UDP and TCP; a TCP socket may already hold it.
                self._tcp = await asyncio.start_server(self._handle_tcp, "127.0.0.1", self.port)
                break
            except OSError:
                transport.close()
                if attempt == 19:
                    raise
        self._udp = transport
        return self.port

    async def _handle_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(2)
                wire = await reader.readexactly(struct.unpack("!H", head)[0])
                out = self.answer(wire, tcp=True)
                if out is None:
                    continue
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()


class LoopThread:
    """An event loop in a background thread, for servers used by CLI tests (which run asyncio.run)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def close(self) -> None:
        """Cancel what still runs (server handlers included), then stop the loop."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()
