"""I/O: gather the DNS and SMTP facts that `checks` judges, for `smtp-probe mx DOMAIN`."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import replace

from probe.checks import AddressFacts, DomainFacts, HostFacts, PolicyFacts, Records, parse_mx
from probe.config import QuitAfter, SessionOptions
from probe.context import RunContext
from probe.resolve import Lookup, Resolver, bad_host_name, lookup, ptr
from probe.result import Dnssec, DnsStatus
from probe.session import run_session
from probe.tls import trust_context

POLICY_LIMIT = 64 * 1024  # RFC 8461 §3.2: policies are small; refuse to read more
POLICY_PATH = "/.well-known/mta-sts.txt"


def _rec(lk: Lookup) -> Records:
    return Records(
        lk.status, lk.records, lk.canonical, lk.authenticated, lk.dnssec, lk.error, lk.lame
    )


async def _address(
    res: Resolver,
    host: str,
    address: str,
    connect: bool,
    port: int,
    opts: SessionOptions,
    run: RunContext,
) -> AddressFacts:
    rev = await ptr(res, address)
    forward: list[str] = []
    for name in rev.records[:5]:
        kind = "AAAA" if ":" in address else "A"
        forward += (await lookup(res, name.rstrip("."), kind)).records
    facts = AddressFacts(address, _rec(rev), tuple(forward))
    if connect:
        session = await run_session(host, address, port, opts, run)
        cert = session.tls.certificate
        facts = replace(facts, session=session, tls_der=cert.der if cert else None)
    return facts


async def _host(
    res: Resolver,
    pref: int,
    host: str,
    connect: bool,
    port: int,
    opts: SessionOptions,
    family: int | None,
    run: RunContext,
) -> HostFacts:
    if bad_host_name(host) is not None:
        unusable = Records(DnsStatus.ERROR)
        return HostFacts(host, pref, unusable, unusable, invalid=host)
    a, aaaa, tlsa = await asyncio.gather(
        lookup(res, host, "A"), lookup(res, host, "AAAA"), lookup(res, f"_25._tcp.{host}", "TLSA")
    )
    alias = a.canonical or aaaa.canonical
    if alias is not None and bad_host_name(alias) is not None:
        return HostFacts(host, pref, _rec(a), _rec(aaaa), invalid=alias)
    base = host
    if alias is not None and a.dnssec is Dnssec.SECURE:
        # A securely aliased host: TLSA records at the expanded name first, then at the
        # name the MX gave (RFC 7672 §2.2.2).
        expanded = await lookup(res, f"_25._tcp.{alias}", "TLSA")
        if expanded.status is DnsStatus.OK or expanded.dnssec is Dnssec.BOGUS:
            tlsa, base = expanded, alias
    addrs = [x for lk, fam in ((a, 4), (aaaa, 6)) if family in (None, fam) for x in lk.records]
    facts = await asyncio.gather(*(_address(res, host, x, connect, port, opts, run) for x in addrs))
    return HostFacts(
        host,
        pref,
        _rec(a),
        _rec(aaaa),
        tuple(facts),
        _rec(tlsa),
        base,
    )


def _content_length(head: bytes) -> int | None:
    """The Content-Length a response announces (None if it announces none); ASCII digits
    only, and a number too long to be a policy's counts as too long."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            value = value.strip()
            if value.isascii() and value.isdigit():
                return int(value) if len(value) < 10 else POLICY_LIMIT + 1
    return None


async def _read_all(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """Everything until the server closes; None once more than `limit` bytes came."""
    data = bytearray()
    while chunk := await reader.read(limit + 1 - len(data)):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


async def _response(reader: asyncio.StreamReader, url: str) -> tuple[bytes, bytes] | str:
    """The head and body of the response, read whole however many reads the network makes
    of it (to its Content-Length, or to the end of the connection); or why they cannot be."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = _content_length(head)
        if length is None:
            body = await _read_all(reader, POLICY_LIMIT)
        else:
            body = await reader.readexactly(length) if length <= POLICY_LIMIT else None
    except asyncio.IncompleteReadError:
        return f"{url} closed the connection before the whole response came"
    except asyncio.LimitOverrunError:
        return f"{url} sent response headers over 64 KB"
    if body is None:
        return f"the policy at {url} is larger than 64 KB"
    return head, body


def _policy(body: bytes) -> PolicyFacts:
    mode = None
    mx: list[str] = []
    for line in body.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "mode":
            mode = value.strip()
        elif key.strip() == "mx":
            mx.append(value.strip())
    return PolicyFacts(True, None, mode, tuple(mx))


async def fetch_policy(
    res: Resolver,
    domain: str,
    *,
    port: int = 443,
    cafile: str | None = None,
    timeout: float = 10.0,
) -> PolicyFacts:
    """GET https://mta-sts.<domain>/.well-known/mta-sts.txt (RFC 8461 §3.3), via our resolver."""
    host = f"mta-sts.{domain}"
    a = await lookup(res, host, "A")
    if not a.records:
        return PolicyFacts(False, f"{host} has no address ({a.error or a.status.value})")
    ctx = trust_context(cafile)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(a.records[0], port, ssl=ctx, server_hostname=host), timeout
        )
    except (OSError, TimeoutError, ssl.SSLError) as e:
        return PolicyFacts(False, f"cannot reach https://{host}/: {e}")
    url = f"https://{host}{POLICY_PATH}"
    try:
        writer.write(
            f"GET {POLICY_PATH} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            "User-Agent: smtp-probe\r\n\r\n".encode()
        )
        await writer.drain()
        async with asyncio.timeout(timeout):
            got = await _response(reader, url)
    except TimeoutError:
        return PolicyFacts(False, f"{url} sent no whole response within {timeout:g} s")
    except (OSError, ssl.SSLError) as e:
        return PolicyFacts(False, f"https://{host}/ failed: {e}")
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), 2)
    if isinstance(got, str):
        return PolicyFacts(False, got)
    status = got[0].split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        return PolicyFacts(False, f"{url} answered {status[1:2]!r}")
    return _policy(got[1])


async def scan(
    res: Resolver,
    domain: str,
    *,
    connect: bool = True,
    port: int = 25,
    opts: SessionOptions | None = None,
    family: int | None = None,
    allow_private: bool = False,
    https_port: int = 443,
    cafile: str | None = None,
) -> DomainFacts:
    """Every fact the checks need, looked up concurrently where that is safe."""
    opts = opts or SessionOptions(quit_after=QuitAfter.TLS, cafile=cafile)
    run = RunContext()  # the scan's sessions resume each other's TLS sessions
    mx, txt, dmarc, sts, rpt = await asyncio.gather(
        lookup(res, domain, "MX"),
        lookup(res, domain, "TXT"),
        lookup(res, f"_dmarc.{domain}", "TXT"),
        lookup(res, f"_mta-sts.{domain}", "TXT"),
        lookup(res, f"_smtp._tls.{domain}", "TXT"),
    )
    implicit = None
    targets: list[tuple[int, str]] = []
    if mx.status is DnsStatus.NODATA:
        a = await lookup(res, domain, "A")
        aaaa = await lookup(res, domain, "AAAA")
        implicit = Records(a.status, a.records + aaaa.records)
        if implicit.records:
            targets = [(0, domain)]
    elif mx.status is DnsStatus.OK:
        # Each host once, at its best preference (duplicates are a finding, not extra work).
        best: dict[str, int] = {}
        for p, h in sorted(parse_mx(mx.records)):
            if h not in ("", "."):
                best.setdefault(h, p)
        targets = [(p, h) for h, p in best.items()]
    hosts = await asyncio.gather(
        *(_host(res, p, h, connect, port, opts, family, run) for p, h in targets)
    )
    policy = None
    if any(t.replace(" ", "").lower().startswith("v=stsv1") for t in sts.records):
        policy = await fetch_policy(res, domain, port=https_port, cafile=cafile)
    return DomainFacts(
        domain=domain,
        mx=_rec(mx),
        implicit=implicit,
        hosts=tuple(hosts),
        txt=_rec(txt),
        dmarc=_rec(dmarc),
        mta_sts=_rec(sts),
        policy=policy,
        tlsrpt=_rec(rpt),
        connected=connect,
        allow_private=allow_private,
    )
