"""Pure: a probe result as a Nagios/Icinga plugin answer: one status line with perfdata, a
line per MX session, and the state 0-3 (monitoring-plugins' developer guidelines).

States: OK when the session was accepted; WARNING when the server answered but refused with a
4xx, threw us out (throttled), or an expectation failed; CRITICAL when it could not be reached,
timed out, answered 5xx, or DNS says no mail host; UNKNOWN for bad arguments. Thresholds on
the time and the certificate's days left can only raise the state.

The service state word ("SMTP OK -") and the perfdata after `|` are protocol: tools parse
them, so they never change; the words between are said in the chosen language.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import NamedTuple

from probe.catalog import Locale, locale
from probe.messages import msg, say
from probe.metrics import PHASES, phase_totals
from probe.result import ProbeResult, Session, Verdict
from probe.text import safe
from probe.verdict import deciding_session

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_RANGE = re.compile(rf"(@)?(?:(~|{_NUMBER})?:)?({_NUMBER})?")


class Range(NamedTuple):
    """A threshold range: alert when the value lies outside start..end (inside with `@`)."""

    start: float
    end: float
    inside: bool
    text: str

    def alerts(self, value: float) -> bool:
        within = self.start <= value <= self.end
        return within if self.inside else not within


def parse_range(text: str, *, bare_is_minimum: bool = False) -> Range:
    """`10` (alert outside 0..10), `10:` (below 10), `~:10` (above 10), `10:20`, `@10:20`
    (inside). With `bare_is_minimum`, a bare `N` means `N:` (days left: warn below N, as
    check_smtp's -D and check_ssl_cert's -w do). ValueError names the mistake."""
    t = text.strip()
    m = _RANGE.fullmatch(t)
    if not t or m is None or (m.group(2) is None and m.group(3) is None and ":" not in t):
        raise ValueError(msg("nagios.bad_range", value=repr(text)))
    inside, start_text, end_text = m.group(1) is not None, m.group(2), m.group(3)
    if ":" not in t and bare_is_minimum and not inside:
        start_text, end_text, t = end_text, None, f"{end_text}:"
    start = -math.inf if start_text == "~" else float(start_text or 0)
    end = math.inf if end_text is None else float(end_text)
    if start > end:
        raise ValueError(msg("nagios.range_order", value=repr(text)))
    return Range(start, end, inside, t)


class Thresholds(NamedTuple):
    warning_days: Range | None = None
    critical_days: Range | None = None
    warning_time: Range | None = None
    critical_time: Range | None = None


class Answer(NamedTuple):
    state: int
    text: str  # the whole plugin output, lines joined

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")


def _clean(text: str) -> str:
    """Outside text in plugin output: no control characters, no `|` (it starts perfdata)."""
    return safe(text).replace("|", "/")


def _replied(s: Session) -> bool:
    return any(st.reply is not None and st.reply.code >= 400 for st in s.steps)


def base_state(result: ProbeResult, throttled: bool) -> int:
    v = result.verdict
    if v is Verdict.ACCEPTED:
        return OK
    if throttled or v is Verdict.EXPECTATION_FAILED:
        return WARNING
    if v is Verdict.TRANSIENT:
        s = deciding_session(result.sessions)
        return WARNING if s is not None and _replied(s) else CRITICAL
    return CRITICAL


def _greeting(s: Session) -> tuple[int | None, float]:
    st = next((st for st in s.steps if st.command == "CONNECT"), None)
    if st is None:
        return None, 0.0
    return (st.reply.code if st.reply else None), st.elapsed_ms / 1000


def _worse(state: int, other: int) -> int:
    return max(state, other) if UNKNOWN not in (state, other) else UNKNOWN


def _judge(
    value: float | None, warn: Range | None, crit: Range | None, what: str
) -> tuple[int, str | None]:
    if value is None:
        return OK, None
    if crit is not None and crit.alerts(value):
        return CRITICAL, msg(f"nagios.{what}_outside", range=crit.text)
    if warn is not None and warn.alerts(value):
        return WARNING, msg(f"nagios.{what}_outside", range=warn.text)
    return OK, None


def _perf(label: str, value: float, unit: str, warn: Range | None, crit: Range | None) -> str:
    w = warn.text if warn else ""
    c = crit.text if crit else ""
    return f"{label}={value:.6g}{unit};{w};{c};0;"


def _session_line(s: Session, loc: Locale) -> str:
    code, seconds = _greeting(s)
    state = OK if s.completed and not _replied(s) else (WARNING if _replied(s) else CRITICAL)
    # An outcome without a greeting stays its token ("timeout"): monitoring rules match it.
    answered = code is not None
    parts = [msg("nagios.answered", code=str(code), seconds=seconds) if answered else s.outcome]
    tls = s.tls
    if tls.ok:
        trusted = tls.trusted and tls.name_matches
        how = "nagios.trusted" if trusted else "nagios.not_trusted"
        parts.append(msg(how, protocol=str(tls.protocol)))
        if tls.certificate is not None:
            parts.append(msg("nagios.days", days=tls.certificate.days_left))
    elif tls.offered or tls.attempted:
        parts.append(msg("nagios.tls_failed", error=tls.error or msg("nagios.no_session")))
    said = ", ".join(say(loc, p) for p in parts)
    where = f"{s.host} [{s.address}]:{s.port}"
    return f"\\_[{STATES[state]}] {_clean(where)}: {_clean(said)}"


def _summary(result: ProbeResult, state: int, notes: Sequence[str], loc: Locale) -> str:
    s = deciding_session(result.sessions)
    if result.verdict is Verdict.ACCEPTED and s is not None:
        code, seconds = _greeting(s)
        text = say(loc, msg("nagios.host_answered", host=s.host, code=str(code), seconds=seconds))
    else:
        text = say(loc, result.reason)
    more = "".join(f", {_clean(say(loc, n))}" for n in notes)
    return f"SMTP {STATES[state]} - {_clean(text)}{more}"


def answer(
    result: ProbeResult, limits: Thresholds, throttled: bool = False, lang: str = "en"
) -> Answer:
    """The plugin's output and state for a finished probe; the human words in `lang`."""
    loc = locale(lang)
    state = base_state(result, throttled)
    notes: list[str] = [msg("nagios.throttled")] if throttled else []
    seconds = result.elapsed_ms / 1000
    time_state, why = _judge(seconds, limits.warning_time, limits.critical_time, "time")
    s = deciding_session(result.sessions)
    cert = s.tls.certificate if s is not None and s.tls.ok else None
    days = float(cert.days_left) if cert is not None else None
    days_state, why_days = _judge(days, limits.warning_days, limits.critical_days, "days")
    if days is None and (limits.warning_days or limits.critical_days) and state == OK:
        days_state, why_days = WARNING, msg("nagios.no_certificate")
    for extra_state, note in ((time_state, why), (days_state, why_days)):
        state = _worse(state, extra_state)
        notes += [note] if note else []
    perf = [_perf("time", seconds, "s", limits.warning_time, limits.critical_time)]
    totals = phase_totals(s)
    perf += [f"{p}={totals[p]:.6g}s;;;0;" for p in PHASES if p in totals]
    if days is not None:
        perf.append(_perf("cert_days", days, "", limits.warning_days, limits.critical_days))
    head = f"{_summary(result, state, notes, loc)} | {' '.join(perf)}"
    return Answer(state, "\n".join([head, *(_session_line(x, loc) for x in result.sessions)]))


def unknown(message: str, lang: str = "en") -> Answer:
    return Answer(UNKNOWN, f"SMTP UNKNOWN - {_clean(say(locale(lang), message))}")
