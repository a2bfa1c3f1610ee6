"""Pure: the verdict of a probe, `--expect` expectations, and the exit status."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from probe import exitcodes
from probe.result import (
    DnsResult,
    DnsStatus,
    ErrorKind,
    ExpectationResult,
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
        raise ValueError(f"--expect {text!r}: expected NAME or NAME=VALUE")
    if key in _STEP_NAMES:
        if not re.fullmatch(r"[2-5](?:\d\d|xx|\dx)", value.lower()):
            raise ValueError(f"--expect {text!r}: the code must look like 250, 2xx or 25x")
        return Expectation(t, "code", _STEP_NAMES[key], value.lower())
    if key == "ext":
        return Expectation(t, "ext", pattern=value.upper())
    if key.endswith("-within") and key[: -len("-within")] in _STEP_NAMES:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s)?", value.lower())
        if not m:
            raise ValueError(f"--expect {text!r}: the time must look like 5s or 500ms")
        seconds = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
        return Expectation(t, "within", _STEP_NAMES[key[: -len("-within")]], number=seconds)
    if key == "cert-days":
        if not value.isdigit():
            raise ValueError(f"--expect {text!r}: cert-days takes a whole number of days")
        return Expectation(t, "cert-days", number=float(value))
    raise ValueError(
        f"--expect {text!r}: unknown expectation (starttls, tls-trusted, STEP=CODE, ext=NAME, "
        "STEP-within=TIME, cert-days=N)"
    )


def _code_matches(code: int, pattern: str) -> bool:
    return all(p in ("x", c) for p, c in zip(pattern, str(code), strict=True))


def _show(step: Step | None) -> str:
    if step is None:
        return "the step never happened"
    if step.reply is not None:
        return " | ".join(step.reply.lines)[:300]
    if step.error is not None:
        return step.error.detail
    return "no reply"


def evaluate(
    expectations: Sequence[Expectation], session: Session | None
) -> list[ExpectationResult]:
    """Check each expectation against the deciding session."""
    out: list[ExpectationResult] = []
    for e in expectations:
        if session is None:
            out.append(ExpectationResult(e.text, False, "no SMTP session took place"))
            continue
        tls = session.tls
        if e.kind == "starttls":
            ok = tls.offered and tls.ok
            detail = (
                "STARTTLS offered and negotiated"
                if ok
                else "STARTTLS not offered"
                if not tls.offered
                else tls.error or "TLS failed"
            )
            out.append(ExpectationResult(e.text, ok, detail))
        elif e.kind == "tls-trusted":
            ok = bool(tls.ok and tls.trusted and tls.name_matches)
            if ok:
                detail = "certificate trusted and valid for the host name"
            elif not tls.ok:
                detail = tls.error or "no TLS session"
            elif not tls.trusted:
                detail = f"certificate not trusted: {tls.verify_error}"
            else:
                detail = f"certificate does not name {session.host}"
            out.append(ExpectationResult(e.text, ok, detail))
        elif e.kind == "code":
            steps = [s for s in session.steps if s.command == e.step]
            if not steps:
                out.append(ExpectationResult(e.text, False, f"no {e.step} was sent"))
                continue
            bad = next(
                (
                    s
                    for s in steps
                    if s.reply is None or not _code_matches(s.reply.code, e.pattern or "")
                ),
                None,
            )
            out.append(ExpectationResult(e.text, bad is None, _show(bad if bad else steps[-1])))
        elif e.kind == "ext":
            names = {k for k, _ in session.extensions}
            ok = (e.pattern or "") in names
            out.append(
                ExpectationResult(e.text, ok, f"offered: {', '.join(sorted(names)) or 'none'}")
            )
        elif e.kind == "within":
            step = next((s for s in session.steps if s.command == e.step and s.reply), None)
            limit = e.number or 0.0
            ok = step is not None and step.elapsed_ms <= limit * 1000
            detail = (
                f"{step.elapsed_ms:.0f} ms (limit {limit * 1000:.0f} ms)"
                if step
                else f"no {e.step} reply"
            )
            out.append(ExpectationResult(e.text, ok, detail))
        elif e.kind == "cert-days":
            cert = tls.certificate
            ok = cert is not None and cert.days_left >= (e.number or 0)
            detail = f"{cert.days_left} days left" if cert else "no certificate"
            out.append(ExpectationResult(e.text, ok, detail))
    return out


def _session_outcome(s: Session) -> Verdict:
    """What one session says about delivery: the last decisive reply wins."""
    replies = [st for st in s.steps if st.reply is not None and st.command not in ("RSET", "QUIT")]
    for st in replies:
        if st.command in ("CONNECT", "EHLO", "HELO", "MAIL") and st.reply and st.reply.code >= 400:
            return Verdict.PERMANENT if st.reply.code >= 500 else Verdict.TRANSIENT
    rcpts = [st for st in replies if st.command == "RCPT" and st.reply]
    if any(st.reply.code >= 500 for st in rcpts if st.reply):
        return Verdict.PERMANENT
    if any(st.reply.code >= 400 for st in rcpts if st.reply):
        return Verdict.TRANSIENT
    errors = [
        st
        for st in s.steps
        if st.error is not None and st.error.kind is not ErrorKind.REFUSED_LOCALLY
    ]
    if not s.completed and errors:
        return Verdict.TRANSIENT
    return Verdict.ACCEPTED


def deciding_session(sessions: Sequence[Session]) -> Session | None:
    done = [s for s in sessions if s.completed]
    if done:
        return done[-1]
    return sessions[-1] if sessions else None


def decide(dns: DnsResult | None, sessions: Sequence[Session]) -> tuple[Verdict, str]:
    """The verdict and a one-line reason."""
    if dns is not None:
        if dns.status is DnsStatus.NXDOMAIN:
            return Verdict.NO_DOMAIN, f"{dns.domain} does not exist (NXDOMAIN)"
        if dns.status in (
            DnsStatus.SERVFAIL,
            DnsStatus.TIMEOUT,
            DnsStatus.REFUSED,
            DnsStatus.ERROR,
        ):
            return Verdict.DNS_FAILURE, f"the MX lookup failed: {dns.error}"
        if dns.null_mx:
            return (
                Verdict.NULL_MX,
                f"{dns.domain} publishes a null MX: it does not accept mail (RFC 7505)",
            )
        if not any(h.addresses for h in dns.mx):
            if any(h.status in (DnsStatus.SERVFAIL, DnsStatus.TIMEOUT) for h in dns.mx):
                return Verdict.DNS_FAILURE, "the mail hosts' addresses could not be looked up"
            return Verdict.NO_HOST, dns.error or "no mail host has a usable address"
    if not sessions:
        return Verdict.NO_HOST, "no address to connect to"
    done = [s for s in sessions if s.completed]
    if done:
        outcomes = [_session_outcome(s) for s in done]
        for v in (Verdict.PERMANENT, Verdict.TRANSIENT):
            if v in outcomes:
                s = done[outcomes.index(v)]
                return (
                    v,
                    f"{s.host} [{s.address}] answered with a {'5xx' if v is Verdict.PERMANENT else '4xx'} reply",
                )
        return Verdict.ACCEPTED, f"{done[-1].host} [{done[-1].address}] accepted the session"
    greetings = [
        st.reply.code
        for s in sessions
        for st in s.steps
        if st.command == "CONNECT" and st.reply is not None
    ]
    if greetings and all(c >= 500 for c in greetings):
        return Verdict.PERMANENT, "every server refused the session at the greeting"
    if greetings:
        return Verdict.TRANSIENT, "no server completed a session"
    if all(_connect_timed_out(s) for s in sessions):
        return Verdict.UNREACHABLE, (
            "every connection attempt timed out; outbound port 25 may be blocked on your own network"
        )
    last = next((st.error for st in reversed(sessions[-1].steps) if st.error), None)
    if any(
        st.command == "CONNECT"
        and st.error
        and st.error.kind is not ErrorKind.REFUSED
        and st.error.kind is not ErrorKind.UNREACHABLE
        for s in sessions
        for st in s.steps
    ):
        return (
            Verdict.TRANSIENT,
            f"no server completed a session ({last.detail if last else 'no reply'})",
        )
    return (
        Verdict.UNREACHABLE,
        f"no server could be reached ({last.detail if last else 'no reply'})",
    )


def _connect_timed_out(s: Session) -> bool:
    return any(
        st.command == "CONNECT" and st.error and st.error.kind is ErrorKind.TIMEOUT
        for st in s.steps
    )


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
