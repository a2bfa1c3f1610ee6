"""Pure: the verdict of a probe, `--expect` expectations, and the exit status."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from probe import exitcodes
from probe.messages import msg
from probe.result import (
    DnsResult,
    DnsStatus,
    ErrorKind,
    ExpectationResult,
    Outcome,
    Session,
    Step,
    Verdict,
)

_STEP_NAMES = {
    "greeting": "CONNECT",
    "ehlo": "EHLO",
    "helo": "HELO",
    "mail": "MAIL",
    "rcpt": "RCPT",
    "starttls": "STARTTLS",
    "quit": "QUIT",
    "rset": "RSET",
}


@dataclass(frozen=True, slots=True)
class Expectation:
    """One parsed `--expect` item."""

    text: str
    kind: str  # starttls | tls-trusted | code | ext | within | cert-days
    step: str | None = None
    pattern: str | None = None
    number: float | None = None


def parse_expectation(text: str) -> Expectation:
    """Parse `starttls`, `tls-trusted`, `rcpt=2xx`, `greeting=220`, `ext=SMTPUTF8`,
    `greeting-within=5s`, `cert-days=30`; raise ValueError with a one-line reason."""
    t = text.strip()
    low = t.lower()
    if low in ("starttls", "tls-trusted"):
        return Expectation(t, low)
    key, sep, value = t.partition("=")
    key = key.strip().lower()
    value = value.strip()
    if not sep or not value:
        raise ValueError(msg("input.expect_form", value=repr(text)))
    if key in _STEP_NAMES:
        if not re.fullmatch(r"[2-5](?:\d\d|xx|\dx)", value.lower()):
            raise ValueError(msg("input.expect_code", value=repr(text)))
        return Expectation(t, "code", _STEP_NAMES[key], value.lower())
    if key == "ext":
        return Expectation(t, "ext", pattern=value.upper())
    if key.endswith("-within") and key[: -len("-within")] in _STEP_NAMES:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s)?", value.lower())
        if not m:
            raise ValueError(msg("input.expect_time", value=repr(text)))
        seconds = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
        return Expectation(t, "within", _STEP_NAMES[key[: -len("-within")]], number=seconds)
    if key == "cert-days":
        if not value.isdigit():
            raise ValueError(msg("input.expect_days", value=repr(text)))
        return Expectation(t, "cert-days", number=float(value))
    raise ValueError(msg("input.expect_unknown", value=repr(text)))


def _code_matches(code: int, pattern: str) -> bool:
    return all(p in ("x", c) for p, c in zip(pattern, str(code), strict=True))


def _show(step: Step | None) -> str:
    if step is None:
        return msg("expect.never_happened")
    if step.reply is not None:
        return " | ".join(step.reply.lines)[:300]
    if step.error is not None:
        return step.error.detail
    return msg("expect.no_reply")


def _expect_starttls(e: Expectation, session: Session) -> ExpectationResult:
    tls = session.tls
    if tls.offered and tls.ok:
        return ExpectationResult(e.text, True, msg("expect.starttls_ok"))
    if not tls.offered:
        return ExpectationResult(e.text, False, msg("expect.starttls_not_offered"))
    return ExpectationResult(e.text, False, tls.error or msg("expect.tls_failed"))


def _expect_tls_trusted(e: Expectation, session: Session) -> ExpectationResult:
    tls = session.tls
    if tls.ok and tls.trusted and tls.name_matches:
        return ExpectationResult(e.text, True, msg("expect.trusted"))
    if not tls.ok:
        detail = tls.error or msg("expect.no_tls")
    elif not tls.trusted:
        detail = msg("expect.untrusted", why=tls.verify_error or "None")
    else:
        detail = msg("expect.wrong_name", host=session.host)
    return ExpectationResult(e.text, False, detail)


def _expect_code(e: Expectation, session: Session) -> ExpectationResult:
    steps = [s for s in session.steps if s.command == e.step]
    if not steps:
        return ExpectationResult(e.text, False, msg("expect.not_sent", step=str(e.step)))
    pattern = e.pattern or ""
    # Every reply to the step must match: one refused RCPT among several fails the expectation.
    bad = next(
        (s for s in steps if s.reply is None or not _code_matches(s.reply.code, pattern)), None
    )
    return ExpectationResult(e.text, bad is None, _show(steps[-1] if bad is None else bad))


def _expect_ext(e: Expectation, session: Session) -> ExpectationResult:
    names = {k for k, _ in session.extensions}
    offered = ", ".join(sorted(names)) or msg("expect.none")
    return ExpectationResult(
        e.text, (e.pattern or "") in names, msg("expect.offered", names=offered)
    )


def _expect_within(e: Expectation, session: Session) -> ExpectationResult:
    step = next((s for s in session.steps if s.command == e.step and s.reply), None)
    if step is None:
        return ExpectationResult(e.text, False, msg("expect.no_step_reply", step=str(e.step)))
    limit_ms = (e.number or 0.0) * 1000
    detail = msg("expect.within", elapsed=step.elapsed_ms, limit=limit_ms)
    return ExpectationResult(e.text, step.elapsed_ms <= limit_ms, detail)


def _expect_cert_days(e: Expectation, session: Session) -> ExpectationResult:
    cert = session.tls.certificate
    if cert is None:
        return ExpectationResult(e.text, False, msg("expect.no_certificate"))
    return ExpectationResult(
        e.text, cert.days_left >= (e.number or 0), msg("expect.days_left", days=cert.days_left)
    )


_EXPECT: dict[str, Callable[[Expectation, Session], ExpectationResult]] = {
    "starttls": _expect_starttls,
    "tls-trusted": _expect_tls_trusted,
    "code": _expect_code,
    "ext": _expect_ext,
    "within": _expect_within,
    "cert-days": _expect_cert_days,
}


def evaluate(
    expectations: Sequence[Expectation], session: Session | None
) -> list[ExpectationResult]:
    """Check each expectation against the deciding session."""
    if session is None:
        return [ExpectationResult(e.text, False, msg("expect.no_session")) for e in expectations]
    # Kinds come from parse_expectation; one built by hand with another kind gives no result.
    return [_EXPECT[e.kind](e, session) for e in expectations if e.kind in _EXPECT]


_OPENING = ("CONNECT", "EHLO", "HELO", "MAIL")


def _session_outcome(s: Session) -> Verdict:
    """What one session says about delivery: a refused greeting, EHLO or MAIL first, then the
    worst RCPT reply (RSET and QUIT say nothing about delivery)."""
    worst_rcpt = 0
    for st in s.steps:
        reply = st.reply
        if reply is None:
            continue
        if st.command == "RCPT":
            worst_rcpt = max(worst_rcpt, reply.code)
        elif reply.code >= 400 and st.command in _OPENING:
            return Verdict.PERMANENT if reply.code >= 500 else Verdict.TRANSIENT
    if worst_rcpt >= 500:
        return Verdict.PERMANENT
    if worst_rcpt >= 400:
        return Verdict.TRANSIENT
    return Verdict.ACCEPTED if s.outcome.completed else Verdict.TRANSIENT


def deciding_session(sessions: Sequence[Session]) -> Session | None:
    done = [s for s in sessions if s.completed]
    if done:
        return done[-1]
    return sessions[-1] if sessions else None


def decide(dns: DnsResult | None, sessions: Sequence[Session]) -> tuple[Verdict, str]:
    """The verdict and a one-line reason."""
    found = _dns_verdict(dns) if dns is not None else None
    if found is not None:
        return found
    if not sessions:
        return Verdict.NO_HOST, msg("verdict.no_address")
    refused = _refused_locally(sessions)
    if refused is not None:
        return refused
    done = [s for s in sessions if s.completed]
    if done:
        return _completed_verdict(done)
    return _incomplete_verdict(sessions)


_DNS_FAILED = (DnsStatus.SERVFAIL, DnsStatus.TIMEOUT, DnsStatus.REFUSED, DnsStatus.ERROR)


def _dns_verdict(dns: DnsResult) -> tuple[Verdict, str] | None:
    """The verdict when DNS alone settles it, else None (sessions decide)."""
    if dns.status is DnsStatus.NXDOMAIN:
        return Verdict.NO_DOMAIN, msg("verdict.nxdomain", domain=dns.domain)
    if dns.status in _DNS_FAILED:
        return Verdict.DNS_FAILURE, msg("verdict.mx_failed", error=dns.error or "")
    if dns.null_mx:
        return (
            Verdict.NULL_MX,
            msg("verdict.null_mx", domain=dns.domain),
        )
    if any(h.addresses for h in dns.mx):
        return None
    if any(h.status in (DnsStatus.SERVFAIL, DnsStatus.TIMEOUT) for h in dns.mx):
        return Verdict.DNS_FAILURE, msg("verdict.hosts_failed")
    return Verdict.NO_HOST, dns.error or msg("verdict.no_usable_host")


def _completed_verdict(done: Sequence[Session]) -> tuple[Verdict, str]:
    """A refusal in any completed session outweighs acceptance in another."""
    outcomes = [_session_outcome(s) for s in done]
    for v, kind in ((Verdict.PERMANENT, "5xx"), (Verdict.TRANSIENT, "4xx")):
        if v in outcomes:
            s = done[outcomes.index(v)]
            return v, msg("verdict.refused", host=s.host, address=s.address, kind=kind)
    return Verdict.ACCEPTED, msg("verdict.accepted", host=done[-1].host, address=done[-1].address)


def _incomplete_verdict(sessions: Sequence[Session]) -> tuple[Verdict, str]:
    """No session completed: tell a refusing server from an unreachable one."""
    greetings = [
        st.reply.code
        for s in sessions
        for st in s.steps
        if st.command == "CONNECT" and st.reply is not None
    ]
    if greetings and all(c >= 500 for c in greetings):
        return Verdict.PERMANENT, msg("verdict.greeting_refused")
    tls = [s for s in sessions if s.outcome in _TLS_REFUSED]
    if tls and all(s.outcome in (*_TLS_REFUSED, *_NOT_REACHED) for s in sessions):
        # TLS was required (--starttls require, --tls) and the server cannot give it: its
        # setup must change, so retrying later is no use.
        return Verdict.PERMANENT, msg(
            "verdict.at_host", host=tls[0].host, address=tls[0].address, detail=_last_error(tls[0])
        )
    if greetings:
        return Verdict.TRANSIENT, msg("verdict.none_completed")
    if all(_connect_timed_out(s) for s in sessions):
        return Verdict.UNREACHABLE, (msg("verdict.port25"))
    last = next((st.error for st in reversed(sessions[-1].steps) if st.error), None)
    detail = last.detail if last else msg("verdict.no_reply")
    # No greeting anywhere: each session ended at its connection. One that failed other than
    # by refusal or no route reached something.
    if any(s.outcome not in _NOT_REACHED for s in sessions):
        return Verdict.TRANSIENT, msg("verdict.none_completed_why", detail=detail)
    return Verdict.UNREACHABLE, msg("verdict.unreachable", detail=detail)


_NOT_REACHED = (Outcome.REFUSED, Outcome.UNREACHABLE, Outcome.BUDGET)
_TLS_REFUSED = (Outcome.STARTTLS_NOT_OFFERED, Outcome.TLS_FAILED)


def _last_error(s: Session) -> str:
    found = next((st for st in reversed(s.steps) if st.error is not None), None)
    if found is None or found.error is None:
        return msg("verdict.tls_failed")
    key = (
        "verdict.tls_required"
        if s.outcome is Outcome.STARTTLS_NOT_OFFERED
        else "verdict.tls_detail"
    )
    return msg(key, detail=found.error.detail)


def _refused_locally(sessions: Sequence[Session]) -> tuple[Verdict, str] | None:
    """A command the probe would not send to a server that cannot take it (a non-ASCII
    address without SMTPUTF8): that server cannot receive this mail, whatever else it said."""
    for s in sessions:
        for st in s.steps:
            if st.error is not None and st.error.kind is ErrorKind.REFUSED_LOCALLY:
                where = {"host": s.host, "address": s.address}
                return Verdict.PERMANENT, msg("verdict.at_host", **where, detail=st.error.detail)
    return None


def _connect_timed_out(s: Session) -> bool:
    return s.outcome is Outcome.TIMEOUT and s.steps[-1].command == "CONNECT"


EXIT = {
    Verdict.ACCEPTED: exitcodes.OK,
    Verdict.TRANSIENT: exitcodes.TEMPFAIL,
    Verdict.UNREACHABLE: exitcodes.TEMPFAIL,
    Verdict.DNS_FAILURE: exitcodes.TEMPFAIL,
    Verdict.PERMANENT: exitcodes.UNAVAILABLE,
    Verdict.EXPECTATION_FAILED: exitcodes.UNAVAILABLE,
    Verdict.NO_DOMAIN: exitcodes.NOHOST,
    Verdict.NULL_MX: exitcodes.NOHOST,
    Verdict.NO_HOST: exitcodes.NOHOST,
}


def exit_status(verdict: Verdict) -> int:
    return EXIT[verdict]
