"""I/O: DNS lookups through dnspython's async resolver; failures become `DnsStatus` values."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

from probe.cache import Bounded
from probe.config import DNS_TRY
from probe.messages import msg
from probe.mx import is_null_mx, is_null_target, order_mx
from probe.result import DnsResult, Dnssec, DnsStatus, MxHost
from probe.target import TargetError, is_ip, to_ascii_domain


class Resolver:
    """dnspython's async resolver and the answers of this run already turned into `Lookup`s.

    dnspython's own cache saves the query; the memo saves building a resolution for every
    hit, which is most of the DNS work of a batch where thousands of domains share a few MX
    hosts. Both belong to this object: two resolvers share nothing.
    """

    def __init__(self, dns_resolver: dns.asyncresolver.Resolver, memo_size: int = 4096) -> None:
        self.dns = dns_resolver
        # Answers (records or NODATA) until dnspython's expiry; failures are never kept.
        self.memo: Bounded[tuple[str, str], tuple[Lookup, float]] = Bounded(memo_size)

    def remembered(self, key: tuple[str, str]) -> Lookup | None:
        hit = self.memo.get(key)
        if hit is None:
            return None
        if hit[1] <= time.time():
            self.memo.pop(key, None)
            return None
        return hit[0]

    def remember(self, key: tuple[str, str], value: Lookup, expires: float) -> None:
        self.memo.put(key, (value, expires))


def make_resolver(
    nameservers: Sequence[tuple[str, int]] | None = None,
    *,
    lifetime: float = 8.0,
    timeout: float | None = None,
) -> Resolver:
    """A resolver asking `nameservers` (host, port); None means the system's configuration.

    `lifetime` bounds a whole lookup; each try waits `timeout`, by default `DNS_TRY` seconds
    or the lifetime when that is shorter."""
    if nameservers:
        res = dns.asyncresolver.Resolver(configure=False)
        res.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in nameservers]
    else:
        res = dns.asyncresolver.Resolver(configure=True)
    res.timeout = min(DNS_TRY, lifetime) if timeout is None else timeout
    res.lifetime = lifetime
    # Ask for the AD bit so DANE findings can say whether the answers were validated.
    res.flags = dns.flags.RD | dns.flags.AD
    # Shared by every lookup of a run (batch included), and small: it keeps whole responses
    # (kilobytes each), while the memo below keeps what a batch asks again (the MX hosts).
    res.cache = dns.resolver.LRUCache(max_size=512)
    return Resolver(res)


@dataclass(frozen=True, slots=True)
class Lookup:
    status: DnsStatus
    records: tuple[str, ...] = ()
    canonical: str | None = None
    error: str | None = None
    authenticated: bool = False  # the resolver set the AD bit (RFC 4035 §3.2.3)
    dnssec: Dnssec = Dnssec.INDETERMINATE
    lame: bool = False  # a referral instead of an answer: the server asked does not hold it


def _status(e: BaseException) -> tuple[DnsStatus, str]:
    if isinstance(e, dns.resolver.NXDOMAIN):
        return DnsStatus.NXDOMAIN, msg("dns.nxdomain")
    if isinstance(e, dns.resolver.NoAnswer):
        return DnsStatus.NODATA, msg("dns.nodata")
    if isinstance(e, dns.resolver.NoNameservers):
        errors = " ".join(str(x[3]) for x in e.kwargs.get("errors", ()))
        if "REFUSED" in errors:
            # REFUSED is a policy answer (an ACL, a server that is not open to this client),
            # not proof of a lame delegation: a lame server answers with a referral.
            return DnsStatus.REFUSED, msg("dns.refused")
        if "CNAME" in errors:
            return DnsStatus.ERROR, msg("dns.cname_loop")
        if "SERVFAIL" in errors or not errors.strip():
            return DnsStatus.SERVFAIL, msg("dns.servfail")
        return DnsStatus.ERROR, msg("dns.rcode", errors=errors.strip()[:80])
    if isinstance(e, dns.exception.Timeout):
        return DnsStatus.TIMEOUT, msg("dns.timeout")
    return DnsStatus.ERROR, msg("dns.other", error=type(e).__name__)


def _extended_errors(e: BaseException) -> str:
    """The Extended DNS Errors (RFC 8914) the failed responses carried, as words."""
    out: list[str] = []
    for err in e.kwargs.get("errors", ()) if isinstance(e, dns.resolver.NoNameservers) else ():
        response = err[4] if len(err) > 4 else None
        if isinstance(response, dns.message.Message):
            out += [
                f"EDE {o.code}: {o.text}" if o.text else f"EDE {o.code}"
                for o in response.extended_errors()
            ]
    return "; ".join(dict.fromkeys(out))


async def _answered_unchecked(res: Resolver, name: str, rdtype: str) -> bool:
    """Whether the resolver answers the query when asked not to validate (CD=1): a
    SERVFAIL that goes away then is a validation failure (RFC 4035 §3.2.2)."""
    cd = dns.asyncresolver.Resolver(configure=False)
    cd.nameservers = res.dns.nameservers
    cd.timeout, cd.lifetime = res.dns.timeout, res.dns.lifetime
    cd.flags = dns.flags.RD | dns.flags.CD
    try:
        await cd.resolve(name, rdtype, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return True
    except (dns.exception.DNSException, ValueError):
        return False
    return True


async def _failed(res: Resolver, name: str, rdtype: str, e: BaseException) -> Lookup:
    status, detail = _status(e)
    if isinstance(e, dns.resolver.NXDOMAIN):
        responses = list(e.kwargs.get("responses", {}).values())
        ad = bool(responses) and all(r.flags & dns.flags.AD for r in responses)
        return Lookup(status, error=detail, authenticated=ad, dnssec=_level(ad))
    if status is not DnsStatus.SERVFAIL:
        return Lookup(status, error=detail)
    ede = _extended_errors(e)
    if await _answered_unchecked(res, name, rdtype):
        why = msg("dns.bogus")
        bogus = msg("dns.with_extended", detail=why, ede=ede) if ede else why
        return Lookup(status, error=bogus, dnssec=Dnssec.BOGUS)
    return Lookup(status, error=msg("dns.with_extended", detail=detail, ede=ede) if ede else detail)


def _level(ad: bool) -> Dnssec:
    return Dnssec.SECURE if ad else Dnssec.INSECURE


def _referral(response: dns.message.Message) -> bool:
    """A non-authoritative, non-recursive empty answer pointing elsewhere: the server asked
    holds neither the zone nor a cache (a lame delegation seen from the client)."""
    if response.flags & (dns.flags.AA | dns.flags.RA):
        return False
    kinds = {rrset.rdtype for rrset in response.authority}
    return dns.rdatatype.NS in kinds and dns.rdatatype.SOA not in kinds


async def lookup(res: Resolver, name: str, rdtype: str) -> Lookup:
    """One query; CNAME chains are followed and the canonical name kept."""
    key = (name.lower(), rdtype)
    if (hit := res.remembered(key)) is not None:
        return hit
    try:
        ans = await res.dns.resolve(name, rdtype, raise_on_no_answer=False)
    except (dns.exception.DNSException, ValueError) as e:
        return await _failed(res, name, rdtype, e)
    ad = bool(ans.response.flags & dns.flags.AD)
    if ans.rrset is None:
        if _referral(ans.response):
            why = "the name server answered with a referral, not an answer (lame delegation)"
            return Lookup(DnsStatus.ERROR, error=why, lame=True)
        # NODATA: kept as long as dnspython keeps it (the SOA's negative TTL, RFC 2308). Most
        # MX hosts have no AAAA, so a batch asks this again and again.
        empty = Lookup(
            DnsStatus.NODATA, error=msg("dns.nodata"), authenticated=ad, dnssec=_level(ad)
        )
        res.remember(key, empty, ans.expiration)
        return empty
    canonical = ans.canonical_name.to_text().rstrip(".")
    if rdtype == "TXT":
        # A TXT record is a list of strings of up to 255 bytes each; they form one value.
        records = tuple(b"".join(r.strings).decode("utf-8", "backslashreplace") for r in ans)
    else:
        records = tuple(r.to_text() for r in ans)
    qname = dns.name.from_text(name).to_text().rstrip(".")
    alias = canonical if canonical.lower() != qname.lower() else None
    found = Lookup(DnsStatus.OK, records, alias, None, ad, _level(ad))
    res.remember(key, found, ans.expiration)
    return found


async def ptr(res: Resolver, address: str) -> Lookup:
    """Reverse lookup of an IP address."""
    return await lookup(res, dns.reversename.from_address(address).to_text(), "PTR")


def bad_host_name(name: str) -> str | None:
    """Why a name read from DNS (in dnspython's escaped text form) cannot name a mail host,
    or None when it can.

    DNS labels may hold any byte; a host name is letters, digits and hyphens (RFC 5321
    §2.3.5), as MTAs check before using one (Postfix: "malformed domain name"). Such a name
    is never looked up, connected to or sent as a TLS server name."""
    try:
        to_ascii_domain(name)
    except TargetError:
        return msg("dns.bad_host")
    return None


async def addresses(
    res: Resolver, host: str, family: int | None = None
) -> tuple[DnsStatus, tuple[str, ...], str | None, str | None]:
    """A and AAAA of a host: (status, addresses, CNAME target if aliased, error)."""
    kinds = [k for k, fam in (("A", 4), ("AAAA", 6)) if family in (None, fam)]
    known = [res.remembered((host.lower(), k)) for k in kinds]
    results: list[Lookup]
    if all(r is not None for r in known):
        results = [r for r in known if r is not None]  # no tasks to start for what is known
    else:
        results = list(await asyncio.gather(*(lookup(res, host, k) for k in kinds)))
    found = tuple(a for r in results for a in r.records)
    cname = next((r.canonical for r in results if r.canonical), None)
    if cname is not None and (why := bad_host_name(cname)) is not None:
        return DnsStatus.ERROR, (), cname, msg("dns.bad_alias", why=why)
    if found:
        return DnsStatus.OK, found, cname, None
    statuses = [r.status for r in results]
    for s in (
        DnsStatus.NXDOMAIN,
        DnsStatus.SERVFAIL,
        DnsStatus.REFUSED,
        DnsStatus.TIMEOUT,
        DnsStatus.ERROR,
    ):
        if s in statuses:
            err = next(r.error for r in results if r.status is s)
            return s, (), cname, err
    return DnsStatus.NODATA, (), cname, msg("dns.no_address")


async def resolve_domain(
    res: Resolver,
    domain: str,
    *,
    family: int | None = None,
    rng: random.Random | None = None,
    max_hosts: int | None = None,
) -> DnsResult:
    """MX hosts of a domain in delivery order, with their addresses (RFC 5321 §5.1); past
    `max_hosts`, hosts are counted in `omitted` and not looked up."""
    rng = rng or random.Random()
    mx = await lookup(res, domain, "MX")
    if mx.status is DnsStatus.NODATA:
        # No MX at all: the domain itself is the implicit MX.
        status, addrs, cname, err = await addresses(res, domain, family)
        if status is DnsStatus.NODATA or (status is DnsStatus.OK and not addrs):
            return DnsResult(
                domain,
                DnsStatus.OK,
                (),
                implicit=True,
                error=msg("dns.no_mail_host"),
            )
        host = MxHost(domain, None, addrs, status, True, cname, err)
        return DnsResult(domain, DnsStatus.OK, (host,), implicit=True)
    if mx.status is not DnsStatus.OK:
        return DnsResult(domain, mx.status, error=mx.error)
    records: list[tuple[int, str]] = []
    for text in mx.records:
        pref, _, exch = text.partition(" ")
        records.append((int(pref), exch.rstrip(".").lower()))
    if is_null_mx(records):
        return DnsResult(domain, DnsStatus.OK, (MxHost("", 0, ()),), null_mx=True)
    ordered = [(p, h) for p, h in order_mx(records, rng) if not is_null_target(h)]
    omitted = 0
    if max_hosts is not None and len(ordered) > max_hosts:
        omitted, ordered = len(ordered) - max_hosts, ordered[:max_hosts]

    async def one(pref: int, host: str) -> MxHost:
        if is_ip(host):
            return MxHost(
                host,
                pref,
                (),
                DnsStatus.ERROR,
                error=msg("dns.mx_is_ip"),
            )
        if (why := bad_host_name(host)) is not None:
            return MxHost(host, pref, (), DnsStatus.ERROR, error=msg("dns.bad_mx", why=why))
        status, addrs, cname, err = await addresses(res, host, family)
        return MxHost(host, pref, addrs, status, False, cname, err)

    hosts = await asyncio.gather(*(one(p, h) for p, h in ordered))
    return DnsResult(domain, DnsStatus.OK, tuple(hosts), omitted=omitted)
