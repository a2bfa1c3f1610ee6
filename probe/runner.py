"""The library entry point: resolve, walk the mail hosts, run sessions, decide."""

from __future__ import annotations

import ipaddress
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import dns.asyncresolver

from probe.resolve import addresses, make_resolver, resolve_domain
from probe.result import DnsResult, DnsStatus, MxHost, ProbeResult, Session, Target, Verdict
from probe.session import SessionOptions, run_session
from probe.verdict import Expectation, decide, deciding_session, evaluate


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    target: Target
    session: SessionOptions = field(default_factory=SessionOptions)
    port: int | None = None
    all_hosts: bool = False
    family: int | None = None
    seed: int | None = None
    nameservers: tuple[tuple[str, int], ...] = ()
    dns_timeout: float = 8.0  # seconds for one DNS lookup, retries included
    expectations: tuple[Expectation, ...] = ()


def _family_ok(addr: str, family: int | None) -> bool:
    return family is None or ipaddress.ip_address(addr).version == family


SessionFn = Callable[[str, str, int, SessionOptions], Awaitable[Session]]


async def probe(
    req: ProbeRequest,
    *,
    resolver: dns.asyncresolver.Resolver | None = None,
    session_fn: SessionFn = run_session,
) -> ProbeResult:
    """Probe one target; network trouble ends up in the result, never as an exception.

    `session_fn` runs one SMTP session; `batch` passes one that applies its limits and cache.
    """
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    t = req.target
    opts = req.session
    if t.rcpt:
        opts = replace(opts, rcpts=tuple(dict.fromkeys((*t.rcpt, *opts.rcpts))))
    rng = random.Random(req.seed)
    dns_result: DnsResult | None = None
    candidates: list[tuple[str, str]] = []
    if t.kind in ("domain", "address") and t.domain:
        res = resolver or make_resolver(req.nameservers or None, lifetime=req.dns_timeout)
        dns_result = await resolve_domain(res, t.domain, family=req.family, rng=rng)
        if dns_result.status is DnsStatus.OK and not dns_result.null_mx:
            candidates = [(h.host, a) for h in dns_result.mx for a in h.addresses]
    elif t.kind == "host" and t.host:
        res = resolver or make_resolver(req.nameservers or None, lifetime=req.dns_timeout)
        status, addrs, cname, err = await addresses(res, t.host, req.family)
        dns_result = DnsResult(
            t.host,
            status if status is not DnsStatus.NODATA else DnsStatus.OK,
            (MxHost(t.host, None, addrs, status, False, cname, err),),
            error=err,
        )
        candidates = [(t.host, a) for a in addrs]
    elif t.host:
        candidates = [(t.host, t.host)]
    candidates = [(h, a) for h, a in candidates if _family_ok(a, req.family)]
    port = t.port or req.port or (465 if opts.implicit_tls else 25)
    sessions: list[Session] = []
    for host, addr in candidates:
        s = await session_fn(host, addr, port, opts)
        sessions.append(s)
        if s.completed and not req.all_hosts:
            break
    verdict, reason = decide(dns_result, sessions)
    results = (
        tuple(evaluate(req.expectations, deciding_session(sessions))) if req.expectations else ()
    )
    if any(not r.met for r in results) and verdict not in (
        Verdict.NO_DOMAIN,
        Verdict.NULL_MX,
        Verdict.NO_HOST,
    ):
        unmet = next(r for r in results if not r.met)
        reason = f"expectation {unmet.expectation} not met: {unmet.detail}"
        verdict = Verdict.EXPECTATION_FAILED
    return ProbeResult(
        target=t,
        dns=dns_result,
        sessions=tuple(sessions),
        verdict=verdict,
        reason=reason,
        expectations=results,
        started_at=started,
        elapsed_ms=round((time.perf_counter() - t0) * 1000, 1),
    )
