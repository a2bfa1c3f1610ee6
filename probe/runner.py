"""The library entry point: resolve, walk the mail hosts, run sessions, decide."""

from __future__ import annotations

import ipaddress
import random
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from probe.config import ProbeRequest
from probe.context import RunContext
from probe.result import DnsResult, DnsStatus, MxHost, ProbeResult, Session, Verdict
from probe.session import Direct, SessionRunner
from probe.verdict import decide, deciding_session, evaluate

if TYPE_CHECKING:
    from probe.resolve import Resolver

# Nothing was there to probe: no expectation can be met or missed.
_BEFORE_EXPECTATIONS = (Verdict.NO_DOMAIN, Verdict.NULL_MX, Verdict.NO_HOST)


def _family_ok(addr: str, family: int | None) -> bool:
    return family is None or ipaddress.ip_address(addr).version == family


async def _candidates(
    req: ProbeRequest, resolver: Resolver | None
) -> tuple[DnsResult | None, list[tuple[str, str]]]:
    """The DNS result (None when no lookup was needed) and the (host, address) pairs."""
    t = req.target
    if t.kind not in ("domain", "address", "host"):
        return None, [(t.host, t.host)] if t.host else []
    # Loaded here, not at the top: an address literal needs no DNS, and dnspython's async
    # resolver is a fifth of a whole `probe` process's start-up.
    from probe.resolve import addresses, make_resolver, resolve_domain

    if t.kind in ("domain", "address") and t.domain:
        res = resolver or make_resolver(req.nameservers or None, lifetime=req.dns_timeout)
        rng = random.Random(req.seed)
        dns_result = await resolve_domain(res, t.domain, family=req.family, rng=rng)
        if dns_result.status is not DnsStatus.OK or dns_result.null_mx:
            return dns_result, []
        return dns_result, [(h.host, a) for h in dns_result.mx for a in h.addresses]
    if t.kind == "host" and t.host:
        res = resolver or make_resolver(req.nameservers or None, lifetime=req.dns_timeout)
        status, addrs, cname, err = await addresses(res, t.host, req.family)
        host = MxHost(t.host, None, addrs, status, False, cname, err)
        ok = status if status is not DnsStatus.NODATA else DnsStatus.OK
        return DnsResult(t.host, ok, (host,), error=err), [(t.host, a) for a in addrs]
    return None, [(t.host, t.host)] if t.host else []


async def probe(
    req: ProbeRequest,
    *,
    resolver: Resolver | None = None,
    runner: SessionRunner | None = None,
    run: RunContext | None = None,
) -> ProbeResult:
    """Probe one target; network trouble ends up in the result, never as an exception.

    `runner` runs each session (batch passes one that applies its limits and cache); `run`
    holds what sessions share (TLS sessions, verdicts, replies) and the observer, if any.
    Two calls share nothing unless given the same `run`.
    """
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    run = run or RunContext()
    runner = runner or Direct(run)
    opts = req.session
    if req.target.rcpt:
        opts = replace(opts, rcpts=tuple(dict.fromkeys((*req.target.rcpt, *opts.rcpts))))
    dns_result, candidates = await _candidates(req, resolver)
    if dns_result is not None and run.observer is not None:
        run.observer.resolved(dns_result)
    port = req.target.port or req.port or (465 if opts.implicit_tls else 25)
    sessions: list[Session] = []
    for host, addr in candidates:
        if not _family_ok(addr, req.family):
            continue
        s = await runner.session(host, addr, port, opts)
        sessions.append(s)
        if s.completed and not req.all_hosts:
            break
    verdict, reason = decide(dns_result, sessions)
    results = (
        tuple(evaluate(req.expectations, deciding_session(sessions))) if req.expectations else ()
    )
    unmet = next((r for r in results if not r.met), None)
    if unmet is not None and verdict not in _BEFORE_EXPECTATIONS:
        reason = f"expectation {unmet.expectation} not met: {unmet.detail}"
        verdict = Verdict.EXPECTATION_FAILED
    return ProbeResult(
        target=req.target,
        dns=dns_result,
        sessions=tuple(sessions),
        verdict=verdict,
        reason=reason,
        expectations=results,
        started_at=started,
        elapsed_ms=round((time.perf_counter() - t0) * 1000, 1),
    )
