"""I/O: gather the DNS and SMTP facts that `checks` judges, for `smtp-probe mx DOMAIN`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

from probe.checks import AddressFacts, DomainFacts, HostFacts, Records, greeted, parse_mx
from probe.config import QuitAfter, SessionOptions
from probe.context import RunContext
from probe.resolve import Lookup, Resolver, bad_host_name, lookup, ptr
from probe.result import Dnssec, DnsStatus
from probe.session import run_session
from probe.stsfetch import POLICY_LIMIT, fetch_policy
from probe.tlsscan import scan_address

__all__ = ["POLICY_LIMIT", "fetch_policy", "scan"]


def _rec(lk: Lookup) -> Records:
    return Records(
        lk.status, lk.records, lk.canonical, lk.authenticated, lk.dnssec, lk.error, lk.lame
    )


# Sessions (each with its TLS scan) to one domain's MX addresses at once. All of them at once
# were a burst that a provider's rate limits count against the probe (MTAs deliver to one
# address at a time); the DNS lookups stay concurrent.
SESSIONS_AT_ONCE = 4


@dataclass
class _Scan:
    """What the hosts and addresses of one scan share."""

    res: Resolver
    connect: bool
    port: int
    opts: SessionOptions
    family: int | None
    tls_scan: bool
    run: RunContext = field(default_factory=RunContext)  # sessions resume each other's TLS
    gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(SESSIONS_AT_ONCE))

    async def address(self, host: str, address: str) -> AddressFacts:
        rev = await ptr(self.res, address)
        forward: list[str] = []
        for name in rev.records[:5]:
            kind = "AAAA" if ":" in address else "A"
            forward += (await lookup(self.res, name.rstrip("."), kind)).records
        facts = AddressFacts(address, _rec(rev), tuple(forward))
        if not self.connect:
            return facts
        async with self.gate:
            return await self._connected(host, facts)

    async def _connected(self, host: str, facts: AddressFacts) -> AddressFacts:
        opts, address = self.opts, facts.address
        session = await run_session(host, address, self.port, opts, self.run)
        cert = session.tls.certificate
        facts = replace(facts, session=session, tls_der=cert.der if cert else None)
        if self.tls_scan and greeted(session):
            # The scan says EHLO with the name the session used, so the server sees one client.
            helo = next((st.sent for st in session.steps if st.command in ("EHLO", "HELO")), None)
            name = helo.split(" ", 1)[1] if helo and " " in helo else opts.helo or host
            tls = session.tls
            scanned = await scan_address(address, self.port, host, name, opts.timeouts, tls)
            facts = replace(facts, tls_scan=scanned)
        return facts

    async def host(self, pref: int, host: str) -> HostFacts:
        res = self.res
        if bad_host_name(host) is not None:
            unusable = Records(DnsStatus.ERROR)
            return HostFacts(host, pref, unusable, unusable, invalid=host)
        a, aaaa, tlsa = await asyncio.gather(
            lookup(res, host, "A"),
            lookup(res, host, "AAAA"),
            lookup(res, f"_25._tcp.{host}", "TLSA"),
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
        families = ((a, 4), (aaaa, 6))
        addrs = [x for lk, fam in families if self.family in (None, fam) for x in lk.records]
        facts = await asyncio.gather(*(self.address(host, x) for x in addrs))
        return HostFacts(host, pref, _rec(a), _rec(aaaa), tuple(facts), _rec(tlsa), base)


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
    tls_scan: bool = False,
) -> DomainFacts:
    """Every fact the checks need, looked up concurrently where that is safe; with
    `tls_scan`, the deeper TLS facts of each address that offers STARTTLS too (five more
    connections to it, see `probe.tlsscan`)."""
    opts = opts or SessionOptions(quit_after=QuitAfter.TLS, cafile=cafile)
    scanning = _Scan(res, connect, port, opts, family, tls_scan)
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
    hosts = await asyncio.gather(*(scanning.host(p, h) for p, h in targets))
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
