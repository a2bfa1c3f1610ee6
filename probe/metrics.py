"""Pure: a probe result as metric samples with bounded labels, and the throttled state.

Names follow blackbox_exporter where it has one (`probe_success`, `probe_duration_seconds`, ...),
so dashboards and alerts keep working; the rest are `smtp_probe_*`. Every label value comes
from a closed set (phases, steps, reply classes, the catalog's categories, registered enhanced
codes, TLS versions): never an address, a host name from the server, or reply text.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple

from probe import certs
from probe.model import ACTORS, CATEGORIES
from probe.result import (
    DnsStatus,
    ErrorKind,
    Outcome,
    ProbeResult,
    Session,
    Step,
    TlsInfo,
    Verdict,
)
from probe.verdict import deciding_session

PHASES: tuple[str, ...] = (
    "resolve",
    "connect",
    "greeting",
    "ehlo",
    "starttls",
    "tls_ehlo",
    "mail",
    "rcpt",
    "rset",
    "quit",
)
# Where a probe failed: a phase, or what is judged after the replies.
STEPS: tuple[str, ...] = (*PHASES, "tls", "expect")
REASONS: tuple[str, ...] = (
    *(k.value for k in ErrorKind),
    *(s.value for s in DnsStatus if s is not DnsStatus.OK),
    "null_mx",
    "no_host",
    "transient",
    "permanent",
    "untrusted",
    "name_mismatch",
    "expectation",
)
REPLY_CLASSES: tuple[str, ...] = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")
TLS_VERSIONS = {
    "TLSv1.3": "TLS 1.3",
    "TLSv1.2": "TLS 1.2",
    "TLSv1.1": "TLS 1.1",
    "TLSv1": "TLS 1.0",
    "SSLv3": "SSL 3.0",
}
THROTTLE_SIGNS: tuple[str, ...] = (
    "421",
    "rate_limited",
    "closed_after_ehlo",
    "greeting_stalled",
    "starttls_vanished",
)
# An OpenSSL cipher name as our own client offers it; anything else is not exported as is.
_CIPHER = re.compile(r"[A-Z0-9_-]{1,64}")

# name -> (type, help), in the order they are exposed.
FAMILIES: dict[str, tuple[str, str]] = {
    "probe_success": ("gauge", "Whether the probe succeeded (blackbox_exporter compatible)"),
    "probe_duration_seconds": ("gauge", "How long the probe took"),
    "probe_timeout_seconds": ("gauge", "The time the probe was allowed"),
    "probe_dns_lookup_time_seconds": ("gauge", "Time spent resolving the target"),
    "probe_ip_protocol": ("gauge", "IP version of the address that decided the probe"),
    "probe_ip_addr_hash": ("gauge", "FNV-1a hash of that address (spot changes, no label)"),
    "probe_ssl_earliest_cert_expiry": ("gauge", "Expiry of the server certificate (unix time)"),
    "probe_tls_version_info": ("gauge", "TLS version negotiated"),
    "smtp_probe_phase_duration_seconds": ("gauge", "Time spent in each phase of the session"),
    "smtp_probe_failed_step": ("gauge", "The step where the probe failed, and why"),
    "smtp_probe_reply_code": ("gauge", "The reply code of each step (the worst for RCPT)"),
    "smtp_probe_reply_info": ("gauge", "What each step's reply means, from the catalog"),
    "smtp_probe_retry_after_seconds": ("gauge", "How long the catalog says to wait to retry"),
    "smtp_probe_tls_info": ("gauge", "TLS facts of the deciding session"),
    "smtp_probe_tls_facts_age_seconds": ("gauge", "Age of the TLS facts exported"),
    "smtp_probe_mx_hosts": ("gauge", "MX hosts of the domain (1 for a host target)"),
    "smtp_probe_mx_reachable": ("gauge", "MX hosts probed that completed a session"),
    "smtp_probe_throttled": ("gauge", "Whether the server throttled the prober"),
    "smtp_probe_throttle_sign": ("gauge", "What showed the throttling"),
    "smtp_probe_result_age_seconds": ("gauge", "Age of the result served (cached results)"),
    "smtp_probe_last_run_timestamp_seconds": ("gauge", "When the result served was made"),
}


class Sample(NamedTuple):
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


class Memory(NamedTuple):
    """What the exporter keeps of a target and module between probes."""

    greeted: bool = False  # the last probe got a greeting in time
    starttls_hosts: frozenset[str] = frozenset()  # MX hosts that offered STARTTLS last time
    good_tls: TlsInfo | None = None  # the last TLS facts from a completed handshake
    good_tls_at: float = 0.0  # when they were seen (unix time)


class Snapshot(NamedTuple):
    """One probe and what is known around it: everything the samples are made from."""

    result: ProbeResult
    made_at: float  # unix time
    timeout: float
    dns_seconds: float | None = None
    throttle: str | None = None  # one of THROTTLE_SIGNS
    memory: Memory = Memory()
    verify: bool = True  # tls_verify = pkix


# -- the throttled state ------------------------------------------------------------------------


def _replies(s: Session) -> Iterable[Step]:
    return (st for st in s.steps if st.reply is not None)


def _closed_after_ehlo(s: Session) -> bool:
    """The server answered EHLO, then hung up before the next reply."""
    seen_ehlo = False
    for st in s.steps:
        if st.command in ("EHLO", "HELO") and st.reply is not None and st.reply.code < 400:
            seen_ehlo = True
        elif seen_ehlo and st.error is not None and st.command not in ("QUIT", "RSET"):
            return st.error.kind is ErrorKind.DISCONNECTED
    return False


def throttle_sign(result: ProbeResult, memory: Memory | None) -> str | None:
    """What says the server throttled us this time (one of THROTTLE_SIGNS), or None."""
    for s in result.sessions:
        for st in _replies(s):
            assert st.reply is not None
            if st.reply.code == 421:
                return "421"
            i = st.reply.interpretation
            if i is not None and i.category == "rate_limited":
                return "rate_limited"
        if _closed_after_ehlo(s):
            return "closed_after_ehlo"
    if memory is None:
        return None
    if memory.greeted and any(s.outcome is Outcome.NO_GREETING for s in result.sessions):
        return "greeting_stalled"
    for s in result.sessions:
        if s.host in memory.starttls_hosts and s.outcome is Outcome.STARTTLS_NOT_OFFERED:
            return "starttls_vanished"
        if s.host in memory.starttls_hosts and s.completed and not s.tls.offered:
            return "starttls_vanished"
    return None


def remember(result: ProbeResult, memory: Memory | None, now: float) -> Memory:
    """What to keep for the next probe of the same target and module."""
    old = memory or Memory()
    greeted = any(st.command == "CONNECT" and st.reply for s in result.sessions for st in s.steps)
    offered = frozenset(s.host for s in result.sessions if s.tls.offered)
    stalled = not greeted and old.greeted
    tls = next((s.tls for s in result.sessions if s.tls.ok and s.tls.certificate), None)
    return Memory(
        greeted=greeted or stalled,  # one stall does not forget the quick greetings before
        starttls_hosts=offered or old.starttls_hosts,
        good_tls=tls or old.good_tls,
        good_tls_at=now if tls is not None else old.good_tls_at,
    )


# -- samples ------------------------------------------------------------------------------------


def phase_of(st: Step, implicit: bool) -> str | None:
    name = {
        "CONNECT": "greeting",
        "STARTTLS": "starttls",
        "MAIL": "mail",
        "RCPT": "rcpt",
        "RSET": "rset",
        "QUIT": "quit",
    }.get(st.command)
    if name is not None:
        return name
    if st.command in ("EHLO", "HELO"):
        return "tls_ehlo" if st.tls and not implicit else "ehlo"
    return None


def reply_class(code: int) -> str:
    return f"{code // 100}xx" if 1 <= code // 100 <= 5 else "other"


def _fnv1a(text: str) -> int:
    h = 0x811C9DC5
    for b in text.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def _bool(value: bool | None) -> str:
    return "unknown" if value is None else ("1" if value else "0")


def success(snap: Snapshot) -> bool:
    r = snap.result
    if r.verdict is not Verdict.ACCEPTED:
        return False
    s = deciding_session(r.sessions)
    return not (snap.verify and s is not None and _tls_fault(s.tls) is not None)


def _tls_fault(tls: TlsInfo) -> str | None:
    if not tls.ok:
        return None
    if not tls.trusted:
        return "untrusted"
    return "name_mismatch" if tls.name_matches is False else None


_DNS_REASONS = {
    Verdict.NO_DOMAIN: "nxdomain",
    Verdict.NULL_MX: "null_mx",
    Verdict.NO_HOST: "no_host",
}


def failed_step(snap: Snapshot) -> tuple[str, str] | None:
    """(step, reason) where the probe failed; None when it succeeded."""
    r = snap.result
    if success(snap):
        return None
    if r.verdict in _DNS_REASONS:
        return "resolve", _DNS_REASONS[r.verdict]
    if r.verdict is Verdict.DNS_FAILURE:
        status = r.dns.status if r.dns and r.dns.status is not DnsStatus.OK else DnsStatus.ERROR
        return "resolve", status.value
    s = deciding_session(r.sessions)
    if s is None:
        return "resolve", "no_host"
    implicit = s.tls.implicit
    for i, st in enumerate(s.steps):
        if st.command in ("QUIT", "RSET"):
            continue
        where = st if st.command != "BUDGET" else (s.steps[i - 1] if i else st)
        phase = phase_of(where, implicit) or "greeting"
        if st.error is not None:
            return phase, st.error.kind.value
        if st.reply is not None and st.reply.code >= 400:
            return phase, "permanent" if st.reply.code >= 500 else "transient"
    fault = _tls_fault(s.tls)
    if snap.verify and fault is not None:
        return "tls", fault
    return "expect", "expectation"


def phase_totals(s: Session | None) -> dict[str, float]:
    """Seconds spent in each phase of a session (all RCPTs together)."""
    totals: dict[str, float] = {}
    for st in s.steps if s is not None else ():
        phase = phase_of(st, s.tls.implicit) if s is not None else None
        if phase is None:
            continue
        ms = st.elapsed_ms
        if phase == "greeting" and st.setup_ms is not None:
            # The TCP connect (and TLS with --tls) is its own phase; the rest is the wait
            # for the greeting.
            totals["connect"] = totals.get("connect", 0.0) + st.setup_ms / 1000
            ms = max(ms - st.setup_ms, 0.0)
        totals[phase] = totals.get(phase, 0.0) + ms / 1000
    return totals


def _phase_samples(snap: Snapshot, s: Session | None) -> list[Sample]:
    totals = phase_totals(s)
    if snap.dns_seconds is not None:
        totals["resolve"] = snap.dns_seconds
    name = "smtp_probe_phase_duration_seconds"
    return [Sample(name, (("phase", p),), totals[p]) for p in PHASES if p in totals]


def _worst_replies(s: Session) -> dict[str, Step]:
    """Per phase, the reply that says most: the highest code (a refused RCPT among several)."""
    out: dict[str, Step] = {}
    for st in _replies(s):
        phase = phase_of(st, s.tls.implicit)
        if phase is None or st.reply is None:
            continue
        best = out.get(phase)
        if best is None or (best.reply is not None and st.reply.code > best.reply.code):
            out[phase] = st
    return out


def _enhanced_label(st: Step) -> str:
    reply = st.reply
    i = reply.interpretation if reply else None
    if reply is None or reply.enhanced is None:
        return "none"
    if i is None or not i.enhanced_known or i.reply.enhanced is None:
        return "unregistered"
    return str(i.reply.enhanced)


def _reply_samples(s: Session | None) -> list[Sample]:
    if s is None:
        return []
    out: list[Sample] = []
    worst = _worst_replies(s)
    for phase in PHASES:
        st = worst.get(phase)
        if st is None or st.reply is None:
            continue
        step = (("step", phase),)
        out.append(Sample("smtp_probe_reply_code", step, float(st.reply.code)))
        i = st.reply.interpretation
        category = i.category if i is not None and i.category in CATEGORIES else "other"
        actor = i.actor if i is not None and i.actor in ACTORS else "unknown"
        retry = ("yes" if i.retryable else "no") if i is not None else "unknown"
        labels = (
            *step,
            ("class", reply_class(st.reply.code)),
            ("enhanced", _enhanced_label(st)),
            ("category", category),
            ("retry", retry),
            ("actor", actor),
        )
        out.append(Sample("smtp_probe_reply_info", labels, 1.0))
        if i is not None and i.retryable:
            out.append(Sample("smtp_probe_retry_after_seconds", step, float(i.wait)))
    return out


def _expiry(tls: TlsInfo) -> float | None:
    """The earliest notAfter of the chain the server sent, as blackbox_exporter's metric is
    (an intermediate may expire first); the leaf's alone when the session was resumed and
    no chain came."""
    times = [t for t in map(_not_after, tls.chain) if t is not None]
    if times:
        return min(times)
    if tls.certificate is None:
        return None
    try:
        return datetime.fromisoformat(tls.certificate.not_after).timestamp()
    except ValueError:
        return None


def _not_after(der: bytes) -> float | None:
    try:
        return certs.load(der).not_valid_after_utc.timestamp()
    except certs.UNREADABLE:
        return None


def _tls_samples(snap: Snapshot, s: Session | None) -> list[Sample]:
    tls, age = (s.tls, 0.0) if s is not None else (None, 0.0)
    mem = snap.memory
    if (tls is None or not tls.ok) and snap.throttle is not None and mem.good_tls is not None:
        # Throttled: the server said nothing about TLS this time; the last facts still hold.
        tls, age = mem.good_tls, max(0.0, snap.made_at - mem.good_tls_at)
    if tls is None:
        return []
    cipher = tls.cipher if tls.cipher and _CIPHER.fullmatch(tls.cipher) else "none"
    info = (
        ("offered", _bool(tls.offered or tls.implicit)),
        ("trusted", _bool(tls.trusted if tls.ok else None)),
        ("name_match", _bool(tls.name_matches if tls.ok else None)),
        ("cipher", cipher if tls.ok else "none"),
    )
    out = [Sample("smtp_probe_tls_info", info, 1.0)]
    if not tls.ok:
        return out
    out.append(Sample("smtp_probe_tls_facts_age_seconds", (), age))
    version = TLS_VERSIONS.get(tls.protocol or "", "other")
    out.append(Sample("probe_tls_version_info", (("version", version),), 1.0))
    expiry = _expiry(tls)
    if expiry is not None:
        out.append(Sample("probe_ssl_earliest_cert_expiry", (), expiry))
    return out


def _mx_samples(r: ProbeResult) -> list[Sample]:
    if r.dns is not None and r.dns.null_mx:
        hosts = 0
    elif r.dns is not None:
        hosts = len(r.dns.mx)
    else:
        hosts = 1 if r.sessions else 0
    reachable = len({s.host for s in r.sessions if s.completed})
    return [
        Sample("smtp_probe_mx_hosts", (), float(hosts)),
        Sample("smtp_probe_mx_reachable", (), float(reachable)),
    ]


def _address_samples(s: Session | None) -> list[Sample]:
    if s is None:
        return []
    try:
        ip = ipaddress.ip_address(s.address)
    except ValueError:
        return []
    return [
        Sample("probe_ip_protocol", (), float(ip.version)),
        Sample("probe_ip_addr_hash", (), float(_fnv1a(str(ip)))),
    ]


def samples(snap: Snapshot, now: float) -> list[Sample]:
    """The probe's metrics, served `now` (unix time; a cached result is older)."""
    r = snap.result
    s = deciding_session(r.sessions)
    out = [
        Sample("probe_success", (), 1.0 if success(snap) else 0.0),
        Sample("probe_duration_seconds", (), r.elapsed_ms / 1000),
        Sample("probe_timeout_seconds", (), snap.timeout),
    ]
    if snap.dns_seconds is not None:
        out.append(Sample("probe_dns_lookup_time_seconds", (), snap.dns_seconds))
    out += _address_samples(s)
    out += _phase_samples(snap, s)
    failed = failed_step(snap)
    if failed is not None:
        labels = (("step", failed[0]), ("reason", failed[1]))
        out.append(Sample("smtp_probe_failed_step", labels, 1.0))
    out += _reply_samples(s)
    out += _tls_samples(snap, s)
    out += _mx_samples(r)
    out.append(Sample("smtp_probe_throttled", (), 1.0 if snap.throttle else 0.0))
    if snap.throttle is not None:
        out.append(Sample("smtp_probe_throttle_sign", (("sign", snap.throttle),), 1.0))
    out.append(Sample("smtp_probe_result_age_seconds", (), max(0.0, now - snap.made_at)))
    out.append(Sample("smtp_probe_last_run_timestamp_seconds", (), snap.made_at))
    return out


def label_sets(found: Sequence[Sample]) -> dict[str, set[str]]:
    """Every label name and the values it took: what the cardinality test checks."""
    out: dict[str, set[str]] = {}
    for sample in found:
        for k, v in sample.labels:
            out.setdefault(k, set()).add(v)
    return out
