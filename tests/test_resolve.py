"""MX resolution against a DNS server on loopback answering from zone data."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from probe.lab.dns import Behaviour, ZoneDNS
from probe.mx import is_null_mx, order_mx
from probe.resolve import lookup, make_resolver, resolve_domain
from probe.result import DnsStatus

ZONE = """
good.test. 300 IN MX 10 mx1.good.test.
good.test. 300 IN MX 20 mx2.good.test.
mx1.good.test. 300 IN A 127.0.0.2
mx1.good.test. 300 IN AAAA ::1
mx2.good.test. 300 IN A 127.0.0.3
equal.test. 300 IN MX 10 a.equal.test.
equal.test. 300 IN MX 10 b.equal.test.
equal.test. 300 IN MX 10 c.equal.test.
equal.test. 300 IN MX 5 first.equal.test.
a.equal.test. 300 IN A 127.0.0.4
b.equal.test. 300 IN A 127.0.0.5
c.equal.test. 300 IN A 127.0.0.6
first.equal.test. 300 IN A 127.0.0.7
implicit.test. 300 IN A 127.0.0.8
nullmx.test. 300 IN MX 0 .
nullmx.test. 300 IN A 127.0.0.9
cname.test. 300 IN MX 10 alias.cname.test.
alias.cname.test. 300 IN CNAME real.cname.test.
real.cname.test. 300 IN A 127.0.0.10
dangling.test. 300 IN MX 10 gone.dangling.test.
nohost.test. 300 IN TXT "v=spf1 -all"
iplit.test. 300 IN MX 10 192.0.2.1.
broken.test. 300 IN MX 10 mx.broken.test.
loop.test. 300 IN MX 10 a.loop.test.
a.loop.test. 300 IN CNAME b.loop.test.
b.loop.test. 300 IN CNAME a.loop.test.
self.test. 300 IN MX 10 self.test.
self.test. 300 IN A 127.0.0.12
big.test. 300 IN MX 10 mx.big.test.
mx.big.test. 300 IN A 127.0.0.11
"""

BIG = "\n".join(
    f"many.test. 300 IN MX {i} mx{i:03d}.many.test.\nmx{i:03d}.many.test. 300 IN A 127.0.1.{i % 250 + 1}"
    for i in range(100)
)

Resolve = Callable[..., Any]


@pytest.fixture
async def dns_server() -> AsyncIterator[Callable[..., Any]]:
    started: list[ZoneDNS] = []

    async def start(zone: str = ZONE + BIG, behaviour: Behaviour | None = None) -> Any:
        srv = ZoneDNS(zone, behaviour)
        port = await srv.start()
        started.append(srv)
        return make_resolver([("127.0.0.1", port)], timeout=0.5, lifetime=1.5), srv

    yield start
    for s in started:
        await s.stop()


async def test_mx_order_and_addresses(dns_server: Resolve) -> None:
    res, _ = await dns_server()
    r = await resolve_domain(res, "good.test")
    assert r.status is DnsStatus.OK and not r.implicit and not r.null_mx
    assert [(h.host, h.preference) for h in r.mx] == [("mx1.good.test", 10), ("mx2.good.test", 20)]
    assert set(r.mx[0].addresses) == {"127.0.0.2", "::1"}
    six = await resolve_domain(res, "good.test", family=4)
    assert six.mx[0].addresses == ("127.0.0.2",)


async def test_equal_preferences_shuffled_and_seed_repeatable(dns_server: Resolve) -> None:
    res, _ = await dns_server()
    orders = set()
    for seed in range(30):
        r = await resolve_domain(res, "equal.test", rng=random.Random(seed))
        hosts = [h.host for h in r.mx]
        assert hosts[0] == "first.equal.test"
        orders.add(tuple(hosts[1:]))
    assert len(orders) > 1
    a = await resolve_domain(res, "equal.test", rng=random.Random(7))
    b = await resolve_domain(res, "equal.test", rng=random.Random(7))
    assert [h.host for h in a.mx] == [h.host for h in b.mx]


async def test_implicit_mx(dns_server: Resolve) -> None:
    res, _ = await dns_server()
    r = await resolve_domain(res, "implicit.test")
    assert r.implicit and r.mx[0].host == "implicit.test" and r.mx[0].addresses == ("127.0.0.8",)


async def test_null_mx_never_falls_back(dns_server: Resolve) -> None:
    res, srv = await dns_server()
    r = await resolve_domain(res, "nullmx.test")
    assert r.null_mx
    assert not any(q[0] == "nullmx.test." and q[1] == "A" for q in srv.b.queries)


async def test_cname_target_dangling_and_ip_literal(dns_server: Resolve) -> None:
    res, _ = await dns_server()
    r = await resolve_domain(res, "cname.test")
    assert r.mx[0].cname == "real.cname.test" and r.mx[0].addresses == ("127.0.0.10",)
    d = await resolve_domain(res, "dangling.test")
    assert d.mx[0].status is DnsStatus.NXDOMAIN and d.mx[0].addresses == ()
    ip = await resolve_domain(res, "iplit.test")
    assert ip.mx[0].status is DnsStatus.ERROR and "IP address" in (ip.mx[0].error or "")


async def test_nxdomain_servfail_timeout_are_distinct(dns_server: Resolve) -> None:
    res, _ = await dns_server(
        behaviour=Behaviour(servfail={"broken.test."}, silent={"silent.test."})
    )
    assert (await resolve_domain(res, "nowhere.test")).status is DnsStatus.NXDOMAIN
    assert (await resolve_domain(res, "broken.test")).status is DnsStatus.SERVFAIL
    assert (await resolve_domain(res, "silent.test")).status is DnsStatus.TIMEOUT
    nohost = await resolve_domain(res, "nohost.test")
    assert nohost.status is DnsStatus.OK and nohost.implicit and nohost.mx == ()


async def test_truncation_retries_over_tcp(dns_server: Resolve) -> None:
    res, srv = await dns_server(behaviour=Behaviour(truncate={"big.test."}))
    r = await resolve_domain(res, "big.test")
    assert r.mx[0].addresses == ("127.0.0.11",)
    transports = [q[2] for q in srv.b.queries if q[0] == "big.test." and q[1] == "MX"]
    assert transports == ["udp", "tcp"]


async def test_truncation_without_tcp_is_a_clear_failure(dns_server: Resolve) -> None:
    res, _ = await dns_server(behaviour=Behaviour(truncate={"big.test."}, tcp=False))
    r = await resolve_domain(res, "big.test")
    assert r.status in (DnsStatus.TIMEOUT, DnsStatus.SERVFAIL, DnsStatus.ERROR)


async def test_hundred_mx_records(dns_server: Resolve) -> None:
    res, _ = await dns_server()
    r = await resolve_domain(res, "many.test")
    assert len(r.mx) == 100
    assert [h.preference for h in r.mx] == sorted(h.preference or 0 for h in r.mx)


def test_pure_mx_helpers() -> None:
    rng = random.Random(1)
    assert order_mx([(20, "b"), (10, "a")], rng) == [(10, "a"), (20, "b")]
    assert is_null_mx([(0, "")])
    assert not is_null_mx([(0, ""), (10, "mx")])
    assert not is_null_mx([(10, "")])


async def test_cname_loop_and_mx_at_own_domain(dns_server: Resolve) -> None:
    res, _ = await dns_server()
    loop = await resolve_domain(res, "loop.test")
    assert loop.mx[0].status is DnsStatus.ERROR and "CNAME loop" in (loop.mx[0].error or "")
    own = await resolve_domain(res, "self.test")
    assert own.mx[0].host == "self.test" and own.mx[0].addresses == ("127.0.0.12",)


async def test_answers_are_reused_within_their_ttl_and_asked_again_after(
    dns_server: Resolve,
) -> None:
    zone = "short.test. 2 IN MX 10 mx.short.test.\nmx.short.test. 2 IN A 127.0.0.2\n"
    res, srv = await dns_server(zone)
    first = await lookup(res, "short.test", "MX")
    # The very same result object: served from our memo, not rebuilt from dnspython's cache.
    assert await lookup(res, "short.test", "MX") is first
    r = await resolve_domain(res, "short.test")
    assert r.mx[0].addresses == ("127.0.0.2",)
    asked = [q for q in srv.b.queries if q[:2] == ("short.test.", "MX")]
    assert len(asked) == 1
    await asyncio.sleep(2.2)  # the TTL has run out
    again = await lookup(res, "short.test", "MX")
    assert again is not first and again.records == first.records
    asked = [q for q in srv.b.queries if q[:2] == ("short.test.", "MX")]
    assert len(asked) == 2


async def test_failures_are_not_reused(dns_server: Resolve) -> None:
    res, srv = await dns_server(ZONE, Behaviour(servfail={"broken.test."}))
    counts = []
    for _ in range(3):
        r = await resolve_domain(res, "broken.test")
        assert r.status is DnsStatus.SERVFAIL
        counts.append(len([q for q in srv.b.queries if q[0] == "broken.test."]))
    assert counts[0] >= 1 and counts[0] < counts[1] < counts[2]  # every resolution asked again


async def test_no_data_answers_are_reused_like_dnspython_keeps_them(dns_server: Resolve) -> None:
    res, srv = await dns_server()
    first = await lookup(res, "mx2.good.test", "AAAA")  # an A record only
    assert first.status is DnsStatus.NODATA and first.records == ()
    assert await lookup(res, "mx2.good.test", "AAAA") is first
    asked = [q for q in srv.b.queries if q[:2] == ("mx2.good.test.", "AAAA")]
    assert len(asked) == 1
    r = await resolve_domain(res, "good.test")
    assert r.mx[1].addresses == ("127.0.0.3",)
