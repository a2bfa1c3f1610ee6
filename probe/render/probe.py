"""Render a `ProbeResult`: a swaks-like annotated transcript, and the stable JSON schema."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from probe.cache import Bounded
from probe.catalog import Locale
from probe.messages import message_json, say, say_or
from probe.render import CLASS_COLOURS, Styler, flag_messages, plain, retry_advice, texts
from probe.render.interp import interpretation_json
from probe.result import Certificate, DnsResult, ProbeResult, Session, Step, TlsInfo, WireReply
from probe.text import Encoded, safe
from probe.verdict import exit_status

SCHEMA = "smtp-probe/probe/2"
T = TypeVar("T")


def _reply_json(r: WireReply, loc: Locale) -> dict[str, Any]:
    out: dict[str, Any] = {"code": r.code, "enhanced": r.enhanced, "lines": list(r.lines)}
    i = r.interpretation
    if i is None:
        out.update(category=None, retryable=None, **{"class": r.code // 100})
        return out
    out.update(interpretation_json(i, loc))
    return out


def _tls_json(t: TlsInfo, out: ProbeJson) -> dict[str, Any]:
    cert = t.certificate
    return {
        "offered": t.offered,
        "attempted": t.attempted,
        "implicit": t.implicit,
        "ok": t.ok,
        "protocol": t.protocol,
        "cipher": t.cipher,
        "trusted": t.trusted,
        "verify_error": t.verify_error,
        "verify_error_message": message_json(t.verify_error),
        "name_matches": t.name_matches,
        "error": t.error,
        "error_message": message_json(t.error),
        "injected_plaintext_bytes": t.injected_plaintext,
        "resumed": t.resumed,
        "certificate": None if cert is None else out.certificate(cert),
    }


def _certificate_json(cert: Certificate) -> dict[str, object]:
    return {
        "subject": cert.subject,
        "issuer": cert.issuer,
        "sans": list(cert.sans),
        "not_before": cert.not_before,
        "not_after": cert.not_after,
        "days_left": cert.days_left,
        "sha256": cert.sha256,
    }


def _extensions_json(extensions: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"keyword": k, "params": v} for k, v in extensions]


class ProbeJson:
    """The JSON document of a result. A batch keeps one for its run, remembering rendered
    replies: a provider's greeting and 250s are rendered once, not in every record."""

    def __init__(self, loc: Locale, remember: int = 0) -> None:
        self.loc = loc
        # By identity: a run's replies come from one cache (probe.context.Replies), and so do
        # its certificates (probe.tls) and EHLO keywords, so the same part is the same object.
        # The entry holds the object, so its id stays its own.
        self._parts: Bounded[int, tuple[object, object]] | None = (
            Bounded(remember) if remember else None
        )

    def reply(self, r: WireReply) -> dict[str, object]:
        return self._part(r, lambda: Encoded(_reply_json(r, self.loc)))  # in many records

    def certificate(self, cert: Certificate) -> dict[str, object]:
        return self._part(cert, lambda: Encoded(_certificate_json(cert)))

    def extensions(self, extensions: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
        """The EHLO keywords; a kept list is shared by records, never changed."""
        return self._part(extensions, lambda: _extensions_json(extensions))

    def _part(self, source: object, make: Callable[[], T]) -> T:
        """What `make` makes of `source`, made once per object in a run that remembers."""
        if self._parts is None:
            return make()
        hit = self._parts.get(id(source))
        if hit is not None and hit[0] is source:
            return cast(T, hit[1])
        made = make()
        self._parts.put(id(source), (source, made))
        return made

    def document(self, r: ProbeResult, head: dict[str, object] | None = None) -> dict[str, object]:
        """The document; with `head`, its keys come first in place of the schema (a batch
        record, made in one go rather than copied into another dict)."""
        return _document(r, self, head)


def _step_json(s: Step, out: ProbeJson) -> dict[str, Any]:
    return {
        "command": s.command,
        "sent": s.sent,
        "reply": out.reply(s.reply) if s.reply else None,
        "error": {
            "kind": s.error.kind.value,
            "detail": s.error.detail,
            "message": message_json(s.error.detail),
        }
        if s.error
        else None,
        "elapsed_ms": s.elapsed_ms,
        "setup_ms": s.setup_ms,
        "tls": s.tls,
        "note": s.note,
        "note_message": message_json(s.note) if s.note is not None else None,
    }


def _session_json(s: Session, out: ProbeJson) -> dict[str, Any]:
    return {
        "host": s.host,
        "address": s.address,
        "port": s.port,
        "helo": s.helo,
        "completed": s.completed,
        "outcome": s.outcome.value,
        "reused": s.reused,
        "extensions": out.extensions(s.extensions),
        "tls": _tls_json(s.tls, out),
        "steps": [_step_json(st, out) for st in s.steps],
    }


def to_json(r: ProbeResult, loc: Locale) -> dict[str, object]:
    return _document(r, ProbeJson(loc))


def session_json(s: Session, loc: Locale) -> dict[str, object]:
    """One session as in the probe document (the `mx` report draws its sessions from it)."""
    return _session_json(s, ProbeJson(loc))


def _document(
    r: ProbeResult, out: ProbeJson, head: dict[str, object] | None = None
) -> dict[str, Any]:
    t = r.target
    dns = r.dns
    return {
        **(head or {"schema": SCHEMA}),
        "target": {
            "input": t.raw,
            "kind": t.kind,
            "domain": t.domain,
            "host": t.host,
            "port": t.port,
            "rcpt": list(t.rcpt),
        },
        "dns": None
        if dns is None
        else {
            "domain": dns.domain,
            "status": dns.status.value,
            "null_mx": dns.null_mx,
            "implicit_mx": dns.implicit,
            "error": dns.error,
            "error_message": message_json(dns.error),
        },
        "mx": []
        if dns is None
        else [
            {
                "host": h.host,
                "preference": h.preference,
                "addresses": list(h.addresses),
                "status": h.status.value,
                "implicit": h.implicit,
                "cname": h.cname,
                "error": h.error,
                "error_message": message_json(h.error),
            }
            for h in dns.mx
        ],
        "sessions": [_session_json(s, out) for s in r.sessions],
        "verdict": r.verdict.value,
        "reason": r.reason,
        "reason_message": message_json(r.reason),
        "exit_status": exit_status(r.verdict),
        "expectations": [
            {
                "expectation": e.expectation,
                "met": e.met,
                "detail": e.detail,
                "message": message_json(e.detail),
            }
            for e in r.expectations
        ],
        "started_at": r.started_at,
        "elapsed_ms": r.elapsed_ms,
        "notes": [
            {"kind": n.kind, "detail": n.detail, "message": message_json(n.detail)} for n in r.notes
        ],
    }


def _annotation(r: WireReply, loc: Locale, style: Styler) -> list[str]:
    i = r.interpretation
    if i is None:
        return []
    notes = [f"    ! {msg}" for fid, msg in flag_messages(i, loc) if fid != "nonstandard"]
    if i.reply_class in (2, 3):
        name = loc.field("basic", str(r.code), "name") if i.basic_known else None
        return [
            style(f"    = {name or loc.ui(f'category.{i.category}.title')}", None, False),
            *notes,
        ]
    description, _when, fix = texts(i, loc)
    colour = CLASS_COLOURS.get(i.reply_class)
    return [
        style(f"    ! {i.category}: {description}", colour, False),
        f"    {loc.ui('probe.fix')}: {fix}",
        f"    {loc.ui('probe.retry')}: {retry_advice(i, loc)}",
        *notes,
    ]


def _tls_lines(t: TlsInfo, host: str, loc: Locale) -> list[str]:
    yes, no = loc.ui("probe.yes"), loc.ui("probe.no")
    if not t.ok:
        return [f"=== {loc.ui('probe.tls')}: {safe(say_or(loc, t.error, '-'))}"]
    out = [f"=== {loc.ui('probe.tls')} {t.protocol} {t.cipher}"]
    if t.resumed:
        out[0] += f" ({loc.ui('probe.resumed')})"
    c = t.certificate
    if c is not None:
        out.append(f"    {loc.ui('probe.certificate')}: {safe(c.subject)}")
        out.append(f"    {loc.ui('probe.issuer')}: {safe(c.issuer)}")
        out.append(f"    {loc.ui('probe.names')}: {safe(', '.join(c.sans) or '-')}")
        out.append(
            f"    {loc.ui('probe.expires')}: {c.not_after[:10]} "
            f"({loc.ui('probe.days_left', days=c.days_left)})"
        )
        out.append(f"    {loc.ui('probe.fingerprint')}: {c.sha256}")
    trusted = yes if t.trusted else f"{no} ({safe(say_or(loc, t.verify_error, ''))})"
    out.append(f"    {loc.ui('probe.trusted')}: {trusted}")
    # None: no certificate, or one whose names cannot be read; the trust line says which.
    matches = "-" if t.name_matches is None else yes if t.name_matches else no
    out.append(f"    {loc.ui('probe.name_matches')}: {matches} ({safe(host)})")
    if t.injected_plaintext:
        out.append("    " + loc.ui("probe.injected", count=t.injected_plaintext))
    return out


class Transcript:
    """The text transcript, told event by event: `to_text` replays a finished result through
    it, and the live view on a terminal feeds it each step as the reply arrives. Both give
    the same lines."""

    def __init__(self, loc: Locale, style: Styler = plain) -> None:
        self.loc, self.style = loc, style
        self._tls: TlsInfo | None = None
        self._tls_shown = False
        self._host = ""
        self._implicit = False

    def dns(self, dns: DnsResult | None, kind: str) -> list[str]:
        """The MX lookup, for targets that asked for one (`kind` is the target's)."""
        loc = self.loc
        if dns is None or kind not in ("domain", "address"):
            return []
        out = [self.style(f"{loc.ui('probe.mx')}: {safe(dns.domain)}", None, True)]
        if dns.null_mx:
            out.append("    " + loc.ui("probe.null_mx"))
        elif dns.implicit:
            out.append("    " + loc.ui("probe.implicit_mx"))
        for h in () if dns.null_mx else dns.mx:
            pref = "-" if h.preference is None else str(h.preference)
            addrs = ", ".join(h.addresses) or f"({safe(say_or(loc, h.error, h.status.value))})"
            cname = f" -> CNAME {safe(h.cname)}" if h.cname else ""
            out.append(f"    {pref:>5}  {safe(h.host)}{cname}  {addrs}")
        if dns.error and not dns.mx:
            out.append(f"    {safe(say(loc, dns.error))}")
        return [*out, ""]

    def start(self, host: str, address: str, port: int, implicit: bool) -> list[str]:
        self._tls, self._tls_shown = None, False
        self._host, self._implicit = host, implicit
        head = self.loc.ui("probe.connecting", host=safe(host), address=address, port=port)
        return [self.style(f"=== {head}", None, True)]

    def tls(self, info: TlsInfo) -> None:
        self._tls = info

    def step(self, st: Step) -> list[str]:
        out: list[str] = []
        opened_tls = st.tls and not self._implicit
        greeted_tls = st.command == "CONNECT" and self._implicit and st.reply is not None
        if (opened_tls or greeted_tls) and not self._tls_shown and self._tls is not None:
            out.extend(_tls_lines(self._tls, self._host, self.loc))
            self._tls_shown = True
        marker_out, marker_in = ("~>", "<~") if st.tls else ("->", "<-")
        if st.sent is not None:
            out.append(f" {marker_out} {safe(st.sent)}")
        if st.reply is not None:
            out.extend(self._reply(st, marker_in))
        if st.error is not None:
            err = self.style(f"*** {safe(say(self.loc, st.error.detail))}", "red", False)
            out.append(err + f"   ({st.elapsed_ms:.0f} ms)")
        if st.note:
            out.append(f"*** {safe(say(self.loc, st.note))}")
        return out

    def _reply(self, st: Step, marker: str) -> list[str]:
        assert st.reply is not None
        colour = CLASS_COLOURS.get(st.reply.code // 100)
        err = "*" if st.reply.code >= 400 else " "
        out = []
        last = len(st.reply.lines) - 1
        for n, line in enumerate(st.reply.lines):
            suffix = f"   ({st.elapsed_ms:.0f} ms)" if n == last else ""
            out.append(self.style(f"{marker}{err} {safe(line)}", colour, False) + suffix)
        return out + _annotation(st.reply, self.loc, self.style)

    def end(self, s: Session) -> list[str]:
        out = []
        if s.tls.attempted and not self._tls_shown:
            out.extend(_tls_lines(s.tls, s.host, self.loc))
        return [*out, ""]

    def session(self, s: Session) -> list[str]:
        """A finished session, replayed."""
        out = self.start(s.host, s.address, s.port, s.tls.implicit)
        self.tls(s.tls)
        for st in s.steps:
            out.extend(self.step(st))
        return out + self.end(s)

    def verdict(self, r: ProbeResult) -> list[str]:
        loc, style = self.loc, self.style
        out = [] if r.sessions else [loc.ui("probe.no_sessions")]
        out += [style(f"*** {safe(say(loc, n.detail))}", "yellow", False) for n in r.notes]
        for e in r.expectations:
            mark = (
                style(loc.ui("probe.met"), "green", False)
                if e.met
                else style(loc.ui("probe.not_met"), "red", True)
            )
            out.append(
                f"{loc.ui('probe.expectations')}: {safe(e.expectation)} {mark} ({safe(say(loc, e.detail))})"
            )
        status = exit_status(r.verdict)
        colour = "green" if status == 0 else ("yellow" if status == 75 else "red")
        head = style(
            f"{loc.ui('probe.verdict')}: {loc.ui(f'verdict.{r.verdict.value}')}", colour, True
        )
        out.append(head + f" - {safe(say(loc, r.reason))} ({loc.ui('probe.exit', status=status)})")
        return out


def to_text(r: ProbeResult, loc: Locale, style: Styler = plain) -> str:
    t = Transcript(loc, style)
    out = t.dns(r.dns, r.target.kind)
    for s in r.sessions:
        out.extend(t.session(s))
    return "\n".join(out + t.verdict(r))
