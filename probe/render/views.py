"""What the HTML report draws, worked out from the JSON documents every output shares.

The report renders the probe document (`probe.render.probe.to_json`, the batch record): one
path for `probe`, `mx` and `batch`. Geometry is computed here, drawing is left to the
templates: bars in percent of the chart's width, so the chart follows the screen's width
while its text keeps its size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from probe.catalog import Locale
from probe.checks import AddressFacts, DomainFacts, Finding, HostFacts
from probe.messages import said
from probe.render.probe import session_json
from probe.result import Session
from probe.sender import AddressVerdict, Answer
from probe.text import safe

# Narrower bars would vanish; a bar drawn wider than its time is still labelled with its time.
MIN_BAR_PCT = 0.4
# A label fits inside a bar from this width on; a narrower bar has its label under it.
LABEL_INSIDE_PCT = 6.0


class Bar(NamedTuple):
    anchor: str  # id of the step's details, the bar links there (tap on a phone)
    command: str
    label: str  # the reply code, or the kind of error
    klass: str  # c2 c3 c4 c5 cerr: the colour
    start_ms: float
    ms: float
    x: float  # percent of the chart's width
    w: float
    inside: bool
    below: int  # which line under the bar holds a label that does not fit on it
    tip: str  # the hover text: reply lines as received, meaning, fix, retry
    setup_w: float = 0.0  # percent of the width: the TCP connect, or the TLS handshake


class Row(NamedTuple):
    anchor: str
    label: str
    total_ms: float
    bars: tuple[Bar, ...]


class Chart(NamedTuple):
    rows: tuple[Row, ...]
    scale_ms: float
    ticks: tuple[tuple[float, str], ...]  # (percent, label)


class StepView(NamedTuple):
    anchor: str
    command: str
    sent: str | None
    lines: tuple[str, ...]
    klass: str
    elapsed: str
    description: str
    when: str
    fix: str
    retry: str
    error: str
    note: str


class SessionView(NamedTuple):
    anchor: str
    title: str
    outcome: str
    failed: bool
    steps: tuple[StepView, ...]
    tls: tuple[tuple[str, str], ...]


class Badge(NamedTuple):
    name: str
    state: str  # ok bad warn none na
    word: str  # "yes", or what was found ("enforce", the PTR names)


class Node(NamedTuple):
    label: str
    detail: str
    badges: tuple[Badge, ...]
    children: tuple[Node, ...] = ()


class VerdictCell(NamedTuple):
    state: str  # ok bad na: the badge's colour
    word: str  # yes, no, not checked
    reason: str
    detail: str


class VerdictRow(NamedTuple):
    host: str
    address: str
    cells: tuple[VerdictCell, ...]  # opportunistic, DANE-enforcing, MTA-STS-enforcing


def _verdict_cell(a: Answer, loc: Locale) -> VerdictCell:
    state = {True: "ok", False: "bad", None: "na"}[a.delivers]
    reason = loc.ui(f"mx.reason_{a.reason}")
    return VerdictCell(state, loc.ui(f"report.state.{state}"), reason, safe(a.detail))


def verdict_rows(vs: Sequence[AddressVerdict], loc: Locale) -> list[VerdictRow]:
    """The sender's-eye verdict per MX address: would each kind of sender deliver, and why."""
    return [
        VerdictRow(
            safe(v.host),
            v.address,
            tuple(_verdict_cell(a, loc) for a in (v.opportunistic, v.dane_sender, v.sts_sender)),
        )
        for v in vs
    ]


def reply_class(step: Mapping[str, Any]) -> str:
    reply = step.get("reply")
    if isinstance(reply, dict) and isinstance(reply.get("code"), int):
        return f"c{min(max(reply['code'] // 100, 2), 5)}"
    return "cerr"


def step_label(step: Mapping[str, Any]) -> str:
    reply = step.get("reply")
    if isinstance(reply, dict):
        return str(reply.get("code"))
    err = step.get("error")
    return str(err.get("kind")) if isinstance(err, dict) else "-"


def tip(step: Mapping[str, Any], loc: Locale) -> str:
    """Hover text: the command, the reply lines exactly as received, then what they mean."""
    out = [f"{step.get('command')} · {ms(loc, float(step.get('elapsed_ms') or 0))}"]
    setup = step.get("setup_ms")
    if isinstance(setup, int | float) and setup > 0:
        key = (
            "report.setup_connect" if step.get("command") == "CONNECT" else "report.setup_handshake"
        )
        out.append(loc.ui(key, time=ms(loc, float(setup))))
    reply = step.get("reply")
    if isinstance(reply, dict):
        out += [safe(str(line)) for line in reply.get("lines", ())]
        out.append(f"{loc.ui('report.meaning')}: {meaning(reply, loc)}")
        if reply.get("code", 0) >= 400:
            out.append(f"{loc.ui('report.fix')}: {reply.get('fix')}")
            advice = (reply.get("retry") or {}).get("advice")
            out.append(f"{loc.ui('report.retry')}: {advice}")
    err = step.get("error")
    if isinstance(err, dict):
        out.append(f"{loc.ui('report.no_reply')}: {safe(said(loc, err))}")
    return "\n".join(out)


def _nice_step(span: float) -> float:
    """A round tick interval giving at most six ticks over `span` milliseconds."""
    unit = 1.0
    while unit * 6 < span:
        for m in (2.0, 2.5, 2.0):  # 1, 2, 5, 10, 20, 50 ...
            unit *= m
            if unit * 6 >= span:
                break
    return unit


def _ticks(scale: float) -> tuple[tuple[float, str], ...]:
    step = _nice_step(scale)
    out = []
    t = 0.0
    while t <= scale + 1e-9:
        label = f"{t / 1000:g} s" if step >= 1000 else f"{t:g} ms"  # units read alike in all four
        out.append((round(100 * t / scale, 3), label))
        t += step
    return tuple(out)


def chart(sessions: Sequence[Mapping[str, Any]], loc: Locale, prefix: str) -> Chart:
    """One row per session; every row on the scale of the longest session.

    Steps record how long each exchange took, not when it began: a session's exchanges run
    one after another, so a bar starts where the one before it ended (the gaps between
    them are the probe's own bookkeeping, well under a millisecond).
    """
    totals = [sum(float(st.get("elapsed_ms") or 0) for st in s.get("steps", ())) for s in sessions]
    scale = max([*totals, 1.0])
    rows = []
    for n, s in enumerate(sessions):
        start = 0.0
        bars = []
        for k, st in enumerate(s.get("steps", ())):
            ms = float(st.get("elapsed_ms") or 0)
            x = 100 * start / scale
            w = max(100 * ms / scale, MIN_BAR_PCT)
            bars.append(
                Bar(
                    f"{prefix}s{n}-{k}",
                    str(st.get("command")),
                    step_label(st),
                    reply_class(st),
                    start,
                    ms,
                    round(x, 3),
                    round(min(w, 100 - x) if x < 100 else w, 3),
                    w >= LABEL_INSIDE_PCT,
                    k % 2,
                    tip(st, loc),
                    round(min(100 * float(st.get("setup_ms") or 0) / scale, w), 3),
                )
            )
            start += ms
        rows.append(Row(f"{prefix}s{n}", session_title(s, loc), totals[n], tuple(bars)))
    return Chart(tuple(rows), scale, _ticks(scale))


def session_title(s: Mapping[str, Any], loc: Locale) -> str:
    return loc.ui(
        "report.session",
        host=safe(str(s.get("host"))),
        address=s.get("address"),
        port=s.get("port"),
    )


def meaning(reply: Mapping[str, Any], loc: Locale) -> str:
    """What a reply means; for a positive one its name, as the text transcript says it."""
    code = reply.get("code")
    if isinstance(code, int) and code < 400:
        name = loc.field("basic", str(code), "name")
        if name:
            return name
        if reply.get("category"):
            return loc.ui(f"category.{reply['category']}.title")
    return str(reply.get("description") or "")


def ms(loc: Locale, value: float) -> str:
    return loc.ui("probe.elapsed", ms=f"{value:.0f}")


def _step_view(st: Mapping[str, Any], anchor: str, loc: Locale) -> StepView:
    reply: Mapping[str, Any] = st.get("reply") or {}
    err: Mapping[str, Any] = st.get("error") or {}
    sent = st.get("sent")
    return StepView(
        anchor,
        str(st.get("command")),
        safe(sent) if isinstance(sent, str) else None,
        tuple(safe(str(line)) for line in reply.get("lines", ())),
        reply_class(st),
        ms(loc, float(st.get("elapsed_ms") or 0)),
        meaning(reply, loc),
        str(reply.get("when") or ""),
        str(reply.get("fix") or ""),
        str((reply.get("retry") or {}).get("advice") or ""),
        safe(said(loc, err)) if err else "",
        safe(said(loc, st, "note", "note_message")),
    )


def failed(s: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The first step of a session that drew a 4xx/5xx reply or none at all (QUIT aside)."""
    for st in s.get("steps", ()):
        if st.get("command") == "QUIT":
            continue
        reply = st.get("reply")
        if st.get("error") or (isinstance(reply, dict) and reply.get("code", 0) >= 400):
            return dict(st)
    return None


def _tls_rows(t: Mapping[str, Any], loc: Locale) -> tuple[tuple[str, str], ...]:
    if not t.get("attempted"):
        return ()
    if not t.get("ok"):
        return ((loc.ui("probe.tls"), safe(said(loc, t, "error", "error_message") or "-")),)
    yes, no = loc.ui("probe.yes"), loc.ui("probe.no")
    rows = [(loc.ui("probe.tls"), f"{t.get('protocol')} {t.get('cipher')}")]
    cert = t.get("certificate")
    if isinstance(cert, dict):
        rows += [
            (loc.ui("probe.certificate"), safe(str(cert.get("subject")))),
            (loc.ui("probe.issuer"), safe(str(cert.get("issuer")))),
            (loc.ui("probe.names"), safe(", ".join(cert.get("sans") or ()) or "-")),
            (loc.ui("probe.expires"), str(cert.get("not_after"))[:10]),
        ]
    trusted = (
        yes
        if t.get("trusted")
        else f"{no} ({safe(said(loc, t, 'verify_error', 'verify_error_message'))})"
    )
    rows.append((loc.ui("probe.trusted"), trusted))
    rows.append((loc.ui("probe.name_matches"), yes if t.get("name_matches") else no))
    return tuple(rows)


def session_views(
    sessions: Sequence[Mapping[str, Any]], loc: Locale, prefix: str
) -> tuple[SessionView, ...]:
    return tuple(
        SessionView(
            f"{prefix}s{n}",
            session_title(s, loc),
            str(s.get("outcome")),
            failed(s) is not None,
            tuple(
                _step_view(st, f"{prefix}s{n}-{k}", loc) for k, st in enumerate(s.get("steps", ()))
            ),
            _tls_rows(s.get("tls") or {}, loc),
        )
        for n, s in enumerate(sessions)
    )


def badge(loc: Locale, name: str, state: str, detail: str = "") -> Badge:
    return Badge(loc.ui(f"report.badge.{name}"), state, detail or loc.ui(f"report.state.{state}"))


def _address_badges(
    sessions: Iterable[Mapping[str, Any]], loc: Locale, ptr: Badge
) -> tuple[Badge, ...]:
    """What the sessions to one address showed, and its reverse DNS."""
    seen = list(sessions)
    if not seen:
        return (badge(loc, "reachable", "na"), ptr)
    reached = any(st.get("reply") for s in seen for st in s.get("steps", ()))
    tls = [s.get("tls") or {} for s in seen]
    starttls = any(t.get("ok") for t in tls)
    out = [badge(loc, "reachable", "ok" if reached else "bad")]
    if reached:
        out.append(badge(loc, "starttls", "ok" if starttls else "bad"))
    if starttls:
        good = all(t.get("trusted") and t.get("name_matches") for t in tls if t.get("ok"))
        out.append(badge(loc, "trusted", "ok" if good else "bad"))
    out.append(ptr)
    return tuple(out)


def probe_tree(doc: Mapping[str, Any], loc: Locale, verdict: Badge) -> Node:
    """Domain -> MX hosts by preference -> addresses, from a probe document."""
    sessions = list(doc.get("sessions") or ())
    target = doc.get("target") or {}
    dns = doc.get("dns") or {}
    hosts = sorted(
        doc.get("mx") or (), key=lambda h: (h.get("preference") is None, h.get("preference") or 0)
    )
    if not hosts:  # a host or an address literal: no MX lookup, the sessions say where
        seen: dict[str, list[str]] = {}
        for s in sessions:
            seen.setdefault(str(s.get("host")), [])
            if s.get("address") not in seen[str(s.get("host"))]:
                seen[str(s.get("host"))].append(str(s.get("address")))
        hosts = [{"host": h, "preference": None, "addresses": a} for h, a in seen.items()]
    unchecked_ptr = badge(loc, "ptr", "na", loc.ui("report.not_checked"))  # `mx` checks it
    children = []
    for h in hosts:
        addrs = tuple(
            Node(
                str(a),
                "",
                _address_badges(
                    (s for s in sessions if s.get("address") == a and s.get("host") == h["host"]),
                    loc,
                    unchecked_ptr,
                ),
            )
            for a in h.get("addresses") or ()
        )
        pref = h.get("preference")
        detail = loc.ui("report.preference", preference=pref) if pref is not None else ""
        host_badges = (badge(loc, "dane", "na", loc.ui("report.not_checked")),)
        children.append(Node(safe(str(h.get("host"))), detail, host_badges, addrs))
    root = safe(
        str(dns.get("domain") or target.get("domain") or target.get("host") or target.get("input"))
    )
    mta_sts = badge(loc, "mta_sts", "na", loc.ui("report.not_checked"))
    return Node(root, "", (verdict, mta_sts), tuple(children))


def _ptr_badge(a: AddressFacts, loc: Locale) -> Badge:
    if not a.ptr.records:
        return badge(loc, "ptr", "bad")
    names = ", ".join(safe(r.rstrip(".")) for r in a.ptr.records)
    return badge(loc, "ptr", "ok" if a.address in a.ptr_forward else "warn", names)


def _dane_badge(h: HostFacts, ids: set[tuple[str, str]], loc: Locale) -> Badge:
    if h.tlsa is None or not h.tlsa.records:
        return badge(loc, "dane", "none")
    subjects = [f"{h.host} [{a.address}]" for a in h.addresses]
    if any(("dane-mismatch", s) in ids for s in subjects):
        return badge(loc, "dane", "bad")
    if any(("dane-match", s) in ids for s in subjects):
        return badge(loc, "dane", "ok" if h.tlsa.authenticated else "warn")
    return badge(loc, "dane", "warn")


def _mta_sts_badge(f: DomainFacts, loc: Locale) -> Badge:
    if f.mta_sts is None:
        return badge(loc, "mta_sts", "na")
    if not any(r.replace(" ", "").lower().startswith("v=stsv1") for r in f.mta_sts.records):
        return badge(loc, "mta_sts", "none")
    p = f.policy
    if p is None or not p.fetched:
        return badge(loc, "mta_sts", "bad", safe(p.error or "") if p else "")
    return badge(loc, "mta_sts", "ok" if p.mode == "enforce" else "warn", safe(p.mode or ""))


def mx_tree(f: DomainFacts, findings: Sequence[Finding], loc: Locale, verdict: Badge) -> Node:
    """Domain -> MX hosts by preference -> addresses, with what `mx` found on each."""
    ids = {(x.id, x.subject) for x in findings}
    hosts = []
    for h in sorted(f.hosts, key=lambda h: h.preference):
        addrs = []
        for a in h.addresses:
            seen = [session_doc(a.session, loc)] if a.session is not None else []
            ptr = _ptr_badge(a, loc)
            badges = _address_badges(seen, loc, ptr) if f.connected else (ptr,)
            addrs.append(Node(a.address, "", badges))
        detail = loc.ui("report.preference", preference=h.preference)
        hosts.append(Node(safe(h.host), detail, (_dane_badge(h, ids, loc),), tuple(addrs)))
    return Node(safe(f.domain), "", (verdict, _mta_sts_badge(f, loc)), tuple(hosts))


def mx_sessions(f: DomainFacts, loc: Locale) -> list[Mapping[str, Any]]:
    return [
        session_doc(a.session, loc)
        for h in sorted(f.hosts, key=lambda h: h.preference)
        for a in h.addresses
        if a.session is not None
    ]


def session_doc(s: Session, loc: Locale) -> Mapping[str, Any]:
    return session_json(s, loc)


def probe_sentence(doc: Mapping[str, Any], loc: Locale) -> str:
    """The verdict in one sentence: target, verdict, reason."""
    target = doc.get("target") or {}
    return loc.ui(
        "report.probe_sentence",
        target=safe(str(target.get("input") or doc.get("input"))),
        verdict=loc.ui(f"verdict.{doc.get('verdict')}"),
        reason=safe(said(loc, doc, "reason", "reason_message")),
    )


def quoted_step(doc: Mapping[str, Any], detail: str) -> Mapping[str, Any] | None:
    """The step an expectation's detail quotes (`probe.verdict` shows a reply's lines
    joined by " | ", cut at 300 characters), to give the failure that reply's meaning."""
    for s in reversed(doc.get("sessions") or ()):
        for st in s.get("steps") or ():
            lines = (st.get("reply") or {}).get("lines")
            if lines and " | ".join(lines)[:300] == detail:
                return dict(st)
            if (st.get("error") or {}).get("detail") == detail:
                return dict(st)
    return None
