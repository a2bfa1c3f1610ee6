"""The library entry point: resolve, walk the mail hosts, run sessions, decide."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from probe.config import ProbeRequest, SessionOptions, changed
from probe.context import RunContext
from probe.messages import msg
from probe.result import (
    DnsResult,
    DnsStatus,
    MxHost,
    Note,
    Outcome,
    ProbeResult,
    Session,
    Target,
    Verdict,
)
from probe.session import Direct, SessionRunner
from probe.verdict import decide, deciding_session, evaluate

if TYPE_CHECKING:
    from probe.resolve import Resolver

# Nothing was there to probe: no expectation can be met or missed.
_BEFORE_EXPECTATIONS = (Verdict.NO_DOMAIN, Verdict.NULL_MX, Verdict.NO_HOST)
Candidates = list[tuple[str, str]]
# A session started with less of the budget left than this could not even connect: the walk
# stops instead (the timers of the session before may fire a hair before the deadline).
_TOO_LATE = 0.05  # (MX host, address), in the order they are tried


def _family_ok(addr: str, family: int | None) -> bool:
    return family is None or ipaddress.ip_address(addr).version == family


async def _candidates(
    req: ProbeRequest, resolver: Resolver | None
) -> tuple[DnsResult | None, Candidates]:
    """The DNS result and the (host, address) pairs of a target that needs a lookup."""
    t = req.target
    # Loaded here, not at the top: an address literal needs no DNS, and dnspython's async
    # resolver is a fifth of a whole `probe` process's start-up.
    from probe.resolve import addresses, make_resolver, resolve_domain

    res = resolver or make_resolver(req.nameservers or None, lifetime=req.dns_timeout)
    if t.kind in ("domain", "address") and t.domain:
        rng = random.Random(req.seed)
        dns_result = await resolve_domain(
            res, t.domain, family=req.family, rng=rng, max_hosts=req.max_mx
        )
        if dns_result.status is not DnsStatus.OK or dns_result.null_mx:
            return dns_result, []
        return dns_result, [(h.host, a) for h in dns_result.mx for a in h.addresses]
    if t.kind == "host" and t.host:
        status, addrs, cname, err = await addresses(res, t.host, req.family)
        host = MxHost(t.host, None, addrs, status, False, cname, err)
        ok = status if status is not DnsStatus.NODATA else DnsStatus.OK
        return DnsResult(t.host, ok, (host,), error=err), [(t.host, a) for a in addrs]
    return None, _literal(t)


def _needs_dns(t: Target) -> bool:
    """False for an address literal, alone or as the domain of a mailbox (user@[192.0.2.1])."""
    return t.kind in ("domain", "host") or (t.kind == "address" and bool(t.domain))


def _literal(t: Target) -> Candidates:
    return [(t.host, t.host)] if t.host else []


async def _resolved(
    req: ProbeRequest, resolver: Resolver | None, budget: float
) -> tuple[DnsResult | None, Candidates, list[Note]]:
    """The DNS result and the addresses of a target that needs a lookup, within the budget;
    notes say what was cut."""
    try:
        async with asyncio.timeout(budget):
            dns_result, found = await _candidates(req, resolver)
    except TimeoutError:
        name = req.target.domain or req.target.host or ""
        why = msg("runner.dns_budget", seconds=budget)
        return DnsResult(name, DnsStatus.TIMEOUT, error=why), [], [Note("budget", why)]
    notes = []
    if dns_result is not None and dns_result.omitted:
        total = len(dns_result.mx) + dns_result.omitted
        notes.append(
            Note(
                "max_mx",
                msg("runner.max_mx", tried=len(dns_result.mx), total=total),
            )
        )
    return dns_result, _capped(req, found, notes), notes


def _capped(req: ProbeRequest, found: Candidates, notes: list[Note]) -> Candidates:
    """The candidates of the asked address family, at most `max_addresses` (a note says so)."""
    usable = [(h, a) for h, a in found if _family_ok(a, req.family)]
    if len(usable) > req.max_addresses:
        notes.append(
            Note(
                "max_addresses",
                msg("runner.max_addresses", tried=req.max_addresses, total=len(usable)),
            )
        )
        usable = usable[: req.max_addresses]
    return usable


async def _walk(
    req: ProbeRequest,
    candidates: Candidates,
    opts: SessionOptions,
    runner: SessionRunner,
    deadline: float,
) -> tuple[list[Session], Note | None]:
    """A session with each address in turn, until one completes (all with --all) or the
    budget runs out."""
    port = req.target.port or req.port or (465 if opts.implicit_tls else 25)
    opts = changed(opts, deadline=deadline)
    sessions: list[Session] = []
    answered: set[str] = set()  # hosts with a completed session (for one_address)
    skipped = 0
    for host, addr in candidates:
        if deadline - time.monotonic() < _TOO_LATE:
            break
        if req.one_address and host in answered:
            skipped += 1
            continue
        s = await runner.session(host, addr, port, opts)
        sessions.append(s)
        if s.completed and not req.all_hosts:
            return sessions, None
        if s.completed:
            answered.add(host)
    cut = sessions and sessions[-1].outcome is Outcome.BUDGET
    if len(sessions) + skipped == len(candidates) and not cut:
        return sessions, None
    budget = req.session.timeouts.budget
    return sessions, Note(
        "budget",
        msg("runner.budget", seconds=budget, tried=len(sessions), total=len(candidates)),
    )


def _no_family(req: ProbeRequest) -> str:
    """Why there was nothing to connect to, when -4 or -6 may be the cause."""
    t = req.target
    name = t.display or t.raw or t.domain or t.host or "?"
    return msg("runner.no_family", family=req.family or 0, name=name)


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
    Two calls share nothing unless given the same `run`. The whole probe, DNS included, keeps
    within `req.session.timeouts.budget`.
    """
    run = run or RunContext()
    started = run.now()
    t0 = time.perf_counter()
    budget = req.session.timeouts.budget
    deadline = time.monotonic() + budget
    runner = runner or Direct(run)
    opts = req.session
    if req.target.rcpt:
        opts = replace(opts, rcpts=tuple(dict.fromkeys((*req.target.rcpt, *opts.rcpts))))
    if _needs_dns(req.target):
        dns_result, candidates, notes = await _resolved(req, resolver, budget)
    else:  # an address literal: no lookup, no timer, no coroutine (a batch of literals)
        notes = []
        dns_result, candidates = None, _capped(req, _literal(req.target), notes)
    if dns_result is not None and run.observer is not None:
        run.observer.resolved(dns_result)
    sessions, out_of_time = await _walk(req, candidates, opts, runner, deadline)
    if out_of_time is not None:
        notes.append(out_of_time)
    verdict, reason = decide(dns_result, sessions)
    if verdict is Verdict.NO_HOST and req.family and not sessions:
        reason = _no_family(req)
    if out_of_time is not None and not sessions:
        # There were hosts to try, but no time left: not a domain without mail hosts.
        verdict, reason = Verdict.TRANSIENT, out_of_time.detail
    elif out_of_time is not None and not any(s.completed for s in sessions):
        reason = msg("join.two", first=reason, second=out_of_time.detail)
    results = (
        tuple(evaluate(req.expectations, deciding_session(sessions))) if req.expectations else ()
    )
    unmet = next((r for r in results if not r.met), None)
    if unmet is not None and verdict not in _BEFORE_EXPECTATIONS:
        reason = msg("runner.expectation", expectation=unmet.expectation, detail=unmet.detail)
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
        notes=tuple(notes),
    )
