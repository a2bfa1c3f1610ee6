"""Pure MX-setup checks: facts gathered from DNS and SMTP in, findings a mail admin can act on out.

Every finding has a stable id; its message, fix and reference live in the locale files
(`locales/<lang>/findings.toml`), keyed by that id.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum

from probe.dane import DaneCheck, DaneStatus, parse_tlsa, rollover_ready, verify
from probe.messages import msg
from probe.mtasts import sts_record_problems, tlsrpt_problems
from probe.result import Certificate, Dnssec, DnsStatus, Session, TlsInfo
from probe.target import is_ip
from probe.tlsfacts import TlsScan


class Severity(IntEnum):
    OK = 0
    INFO = 1
    WARNING = 2
    ERROR = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Finding:
    id: str
    severity: Severity
    subject: str
    params: tuple[tuple[str, str], ...] = ()

    def kwargs(self) -> dict[str, str]:
        return {"subject": self.subject, **dict(self.params)}


@dataclass(frozen=True, slots=True)
class Records:
    """One DNS answer as the checks see it."""

    status: DnsStatus
    records: tuple[str, ...] = ()
    canonical: str | None = None
    authenticated: bool = False
    dnssec: Dnssec = Dnssec.INDETERMINATE
    error: str | None = None
    lame: bool = False


@dataclass(frozen=True, slots=True)
class AddressFacts:
    address: str
    ptr: Records
    ptr_forward: tuple[str, ...] = ()  # addresses of the PTR names, for forward confirmation
    session: Session | None = None
    tls_der: bytes | None = None
    tls_scan: TlsScan | None = None  # only with `mx --tls-scan`


@dataclass(frozen=True, slots=True)
class HostFacts:
    host: str
    preference: int
    a: Records
    aaaa: Records
    addresses: tuple[AddressFacts, ...] = ()
    tlsa: Records | None = None
    tlsa_base: str | None = None  # where the TLSA records were found (RFC 7672 §2.2.2)
    # The name (the host itself, or what it is an alias of) that is not a valid host name:
    # nothing more is looked up or connected to.
    invalid: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyFacts:
    """The MTA-STS policy fetched over HTTPS, or why it could not be."""

    fetched: bool
    error: str | None = None
    mode: str | None = None
    mx_patterns: tuple[str, ...] = ()
    version: str | None = None
    max_age: int | None = None
    problems: tuple[str, ...] = ()  # why a sender would not use the policy it read


@dataclass(frozen=True, slots=True)
class DomainFacts:
    domain: str
    mx: Records
    implicit: Records | None = None  # A/AAAA of the domain when it has no MX
    hosts: tuple[HostFacts, ...] = ()
    txt: Records | None = None
    dmarc: Records | None = None
    mta_sts: Records | None = None
    policy: PolicyFacts | None = None
    tlsrpt: Records | None = None
    connected: bool = False
    allow_private: bool = False
    extra: dict[str, str] = field(default_factory=dict)


WANTED_EXTENSIONS = (
    "STARTTLS",
    "SIZE",
    "PIPELINING",
    "8BITMIME",
    "SMTPUTF8",
    "ENHANCEDSTATUSCODES",
    "CHUNKING",
)
_DNS_FAILURE_IDS = {
    DnsStatus.SERVFAIL: "dns-servfail",
    DnsStatus.TIMEOUT: "dns-timeout",
    DnsStatus.REFUSED: "dns-refused",
    DnsStatus.ERROR: "dns-error",
}
# One cause met by many lookups (40 MX hosts behind one broken server) is one finding.
_GROUPED = {*_DNS_FAILURE_IDS.values(), "dns-lame", "dnssec-bogus"}


def _dns_failure(rec: Records, query: str, subject: str) -> Finding | None:
    """The finding for a failed lookup (None if it did not fail), its cause told apart:
    a validation failure, a lame delegation, SERVFAIL, REFUSED, a timeout."""
    if rec.status not in _DNS_FAILURE_IDS:
        return None
    fid = _DNS_FAILURE_IDS[rec.status]
    if rec.dnssec is Dnssec.BOGUS:
        fid = "dnssec-bogus"
    elif rec.lame:
        fid = "dns-lame"
    detail = rec.error or rec.status.value
    return Finding(fid, Severity.ERROR, subject, _p(query=query, detail=detail))


def group_findings(findings: list[Finding], domain: str) -> list[Finding]:
    """Findings of one id and cause for several subjects become one finding naming them."""
    keyed: dict[tuple[str, str], list[Finding]] = {}
    for f in findings:
        if f.id in _GROUPED:
            keyed.setdefault((f.id, dict(f.params).get("detail", "")), []).append(f)
    out: list[Finding] = []
    for f in findings:
        same = keyed.get((f.id, dict(f.params).get("detail", "")), [f])
        if len(same) < 2:
            out.append(f)
        elif f is same[0]:
            queries = [dict(x.params).get("query", x.subject) for x in same]
            params = {**dict(f.params), "query": ", ".join(queries), "count": str(len(same))}
            out.append(Finding(f.id, f.severity, domain, tuple(params.items())))
    return out


def parse_mx(records: tuple[str, ...]) -> list[tuple[int, str]]:
    out = []
    for text in records:
        pref, _, host = text.partition(" ")
        if pref.isdigit():
            out.append((int(pref), host.rstrip(".").lower()))
    return out


def _p(**kw: object) -> tuple[tuple[str, str], ...]:
    # A message stays one (probe.messages): the renderer says it in the reader's language.
    return tuple((k, v if isinstance(v, str) else str(v)) for k, v in kw.items())


def _special(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return bool(
        ip.is_private
        or ip.is_loopback
        or ip.is_reserved
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_multicast
    )


def check(f: DomainFacts) -> list[Finding]:
    """All findings for one domain, worst first within each subject."""
    out: list[Finding] = []
    d = f.domain
    if f.mx.status is DnsStatus.NXDOMAIN:
        return [Finding("domain-nxdomain", Severity.ERROR, d)]
    if (failed := _dns_failure(f.mx, f"{d} MX", d)) is not None:
        out.append(failed)
    records = parse_mx(f.mx.records)
    nulls = [(p, h) for p, h in records if h in ("", ".")]
    if f.mx.status is DnsStatus.NODATA:
        if f.implicit is not None and f.implicit.records:
            out.append(Finding("mx-missing-implicit", Severity.WARNING, d))
        else:
            out.append(Finding("mx-missing-no-address", Severity.ERROR, d))
    elif f.mx.status is DnsStatus.OK:
        if nulls:
            if len(records) > 1:
                out.append(Finding("null-mx-mixed", Severity.ERROR, d))
            elif nulls[0][0] != 0:
                out.append(
                    Finding("null-mx-preference", Severity.ERROR, d, _p(preference=nulls[0][0]))
                )
            else:
                out.append(Finding("null-mx", Severity.OK, d))
        else:
            out.append(Finding("mx-present", Severity.OK, d, _p(count=len(records))))
        counts = Counter(h for _, h in records if h not in ("", "."))
        out += [
            Finding("mx-duplicate-target", Severity.WARNING, h, _p(count=n))
            for h, n in counts.items()
            if n > 1
        ]
        prefs = Counter(p for p, h in records if h not in ("", "."))
        out += [
            Finding("mx-equal-preference", Severity.INFO, d, _p(preference=p, count=n))
            for p, n in prefs.items()
            if n > 1
        ]
    null_only = bool(nulls) and len(records) == 1 and nulls[0][0] == 0
    secure = mx_secure(f)
    for h in f.hosts:
        out += _host_findings(h, f.allow_private, secure)
    usable = [h for h in f.hosts if h.addresses]
    if usable and not null_only:
        if any(h.aaaa.records for h in usable):
            out.append(Finding("mx-ipv6", Severity.OK, d))
        else:
            out.append(Finding("mx-no-ipv6", Severity.INFO, d))
    out += _policy_findings(f, null_only)
    return group_findings(out, d)


def mx_secure(f: DomainFacts) -> bool:
    """Whether the MX RRset (or, without one, the domain's own addresses) is DNSSEC-signed:
    without that a sender cannot trust the host names, and DANE does not apply (RFC 7672
    §2.2.1)."""
    if f.mx.status is DnsStatus.NODATA and f.implicit is not None:
        return f.mx.dnssec is Dnssec.SECURE and f.implicit.dnssec is Dnssec.SECURE
    return f.mx.dnssec is Dnssec.SECURE


def _host_findings(h: HostFacts, allow_private: bool, secure: bool) -> list[Finding]:
    out: list[Finding] = []
    if is_ip(h.host):
        return [Finding("mx-target-ip", Severity.ERROR, h.host)]
    if h.invalid is not None:
        return [Finding("mx-target-invalid", Severity.ERROR, h.host, _p(name=h.invalid))]
    if h.a.status is DnsStatus.NXDOMAIN:
        return [Finding("mx-target-nxdomain", Severity.ERROR, h.host)]
    if (failed := _dns_failure(h.a, f"{h.host} A", h.host)) is not None:
        out.append(failed)
    canonical = h.a.canonical or h.aaaa.canonical
    if canonical:
        out.append(Finding("mx-target-cname", Severity.ERROR, h.host, _p(target=canonical)))
    if not h.a.records and not h.aaaa.records and h.a.status not in _DNS_FAILURE_IDS:
        out.append(Finding("mx-target-no-address", Severity.ERROR, h.host))
    for a in h.addresses:
        if _special(a.address):
            sev = Severity.INFO if allow_private else Severity.WARNING
            out.append(Finding("mx-private-address", sev, a.address, _p(host=h.host)))
        out += _ptr_findings(a, h.host)
        if a.session is not None:
            out += _session_findings(a, h, secure)
    return out + _tlsa_findings(h, secure)


def _ptr_findings(a: AddressFacts, host: str) -> list[Finding]:
    names = [r.rstrip(".").lower() for r in a.ptr.records]
    if not names:
        return [Finding("ptr-missing", Severity.WARNING, a.address, _p(host=host))]
    if a.address not in a.ptr_forward:
        return [Finding("ptr-not-confirmed", Severity.WARNING, a.address, _p(ptr=", ".join(names)))]
    return [Finding("ptr-ok", Severity.OK, a.address, _p(ptr=", ".join(names)))]


def _session_findings(a: AddressFacts, h: HostFacts, secure: bool) -> list[Finding]:
    s = a.session
    assert s is not None
    subj = f"{h.host} [{a.address}]"
    greeting = next((st for st in s.steps if st.command == "CONNECT"), None)
    if greeting is None or greeting.reply is None:
        detail = greeting.error.detail if greeting and greeting.error else msg("verdict.no_reply")
        return [Finding("smtp-unreachable", Severity.ERROR, subj, _p(port=s.port, detail=detail))]
    lines = greeting.reply.lines
    if greeting.reply.code != 220:
        reply = " ".join(lines)[:200]
        return [Finding("smtp-greeting-refused", Severity.ERROR, subj, _p(reply=reply))]
    return [
        *_greeting_findings(round(greeting.elapsed_ms), lines, a, h, subj),
        *_extension_findings(s, subj),
        *_tls_findings(s.tls, a, h, subj, secure),
    ]


def _greeting_findings(
    ms: int, lines: tuple[str, ...], a: AddressFacts, h: HostFacts, subj: str
) -> list[Finding]:
    out = [
        Finding("smtp-greeting", Severity.WARNING if ms > 10_000 else Severity.OK, subj, _p(ms=ms))
    ]
    # The first word after "220 " is the name the server calls itself.
    banner = lines[0][4:].split(" ", 1)[0].rstrip(".").lower() if lines else ""
    names = {h.host.lower(), *(r.rstrip(".").lower() for r in a.ptr.records)}
    if banner and banner not in names:
        params = _p(banner=banner, names=", ".join(sorted(names)))
        out.append(Finding("smtp-banner-name", Severity.INFO, subj, params))
    return out


def _extension_findings(s: Session, subj: str) -> list[Finding]:
    offered = {k for k, _ in s.extensions}
    # STARTTLS has findings of its own.
    missing = [e for e in WANTED_EXTENSIONS if e not in offered and e != "STARTTLS"]
    if not missing:
        return []
    return [Finding("smtp-extensions-missing", Severity.INFO, subj, _p(missing=", ".join(missing)))]


def _tls_findings(
    t: TlsInfo, a: AddressFacts, h: HostFacts, subj: str, secure: bool
) -> list[Finding]:
    if not t.offered:
        return [Finding("starttls-missing", Severity.ERROR, subj)]
    if not t.ok:
        detail = t.error or msg("checks.handshake_failed")
        return [Finding("starttls-failed", Severity.ERROR, subj, _p(detail=detail))]
    out = [Finding("starttls-ok", Severity.OK, subj, _p(protocol=t.protocol or "?"))]
    # A certificate DANE authenticates needs no PKIX trust, and under DANE-EE neither its
    # names nor its dates matter (RFC 7672 §3.1.1): no certificate errors then.
    if t.certificate is not None:
        certs = _cert_findings(t, t.certificate, subj)
        if dane_of(h, a, secure).status is DaneStatus.VALIDATED:
            certs = [c for c in certs if c.severity is Severity.OK]
        out += certs
    return out + _dane_findings(h, a, subj)


def _cert_findings(t: TlsInfo, cert: Certificate, subj: str) -> list[Finding]:
    out: list[Finding] = []
    days = cert.days_left
    if t.name_matches is False:
        names = ", ".join(cert.sans) or cert.subject
        out.append(Finding("cert-name-mismatch", Severity.ERROR, subj, _p(names=names)))
    if days < 0:
        out.append(Finding("cert-expired", Severity.ERROR, subj, _p(date=cert.not_after[:10])))
    elif days < 30:
        sev = Severity.ERROR if days < 7 else Severity.WARNING
        out.append(Finding("cert-expiring", sev, subj, _p(days=days)))
    # An expired certificate is reported as expired only, not also as untrusted.
    if t.trusted is False and days >= 0:
        detail = t.verify_error or ""
        out.append(Finding("cert-untrusted", Severity.ERROR, subj, _p(detail=detail)))
    if t.trusted and t.name_matches and days >= 30:
        out.append(Finding("cert-ok", Severity.OK, subj, _p(days=days)))
    return out


def tlsa_matches(record: str, der: bytes) -> bool:
    """Whether a TLSA record ("usage selector mtype data") matches a leaf certificate."""
    from probe.dane import matches

    rec = parse_tlsa(record)
    return rec is not None and matches(rec, der)


def _chain(a: AddressFacts | None) -> tuple[bytes, ...]:
    if a is None or a.session is None or not a.session.tls.ok:
        return ()
    t = a.session.tls
    return t.chain or ((a.tls_der,) if a.tls_der else ())


def _names(h: HostFacts) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n for n in (h.tlsa_base, h.host) if n))


def dane_of(h: HostFacts, a: AddressFacts | None, secure: bool) -> DaneCheck:
    """What a DANE-enforcing sender makes of this host (and address): whether TLSA records
    apply at all, and whether the chain the address sent satisfies them."""
    t = h.tlsa
    if t is None:
        return DaneCheck(DaneStatus.NONE, "TLSA records not looked up")
    if t.dnssec is Dnssec.BOGUS:
        return DaneCheck(DaneStatus.BOGUS, t.error or "DNSSEC validation failed")
    if t.status in (DnsStatus.NXDOMAIN, DnsStatus.NODATA) or (
        t.status is DnsStatus.OK and not t.records
    ):
        return DaneCheck(DaneStatus.NONE, "no TLSA records")
    if t.status is not DnsStatus.OK:
        return DaneCheck(DaneStatus.INDETERMINATE, t.error or t.status.value)
    if t.dnssec is not Dnssec.SECURE:
        return DaneCheck(DaneStatus.NONE, "the TLSA records are not DNSSEC-validated")
    if not secure:
        return DaneCheck(DaneStatus.NONE, "the MX records are not DNSSEC-signed")
    return verify(t.records, _chain(a), _names(h))


def _dane_findings(h: HostFacts, a: AddressFacts, subj: str) -> list[Finding]:
    """Whether the chain this address sent satisfies the published records, signed or not
    (whether a sender would use them is the host's finding)."""
    t = h.tlsa
    chain = _chain(a)
    if t is None or t.status is not DnsStatus.OK or not t.records or not chain:
        return []
    got = verify(t.records, chain, _names(h))
    if got.status is DaneStatus.VALIDATED:
        return [Finding("dane-match", Severity.OK, subj, _p(usage=got.detail, record=got.record))]
    if got.status is DaneStatus.FAILED:
        return [Finding("dane-mismatch", Severity.ERROR, subj, _p(detail=got.detail))]
    return []


def _tlsa_findings(h: HostFacts, secure: bool) -> list[Finding]:
    """The host's TLSA RRset: validated or not, usable or not, ready for a key change."""
    t = h.tlsa
    if t is None:
        return []
    query = f"_25._tcp.{h.tlsa_base or h.host} TLSA"
    if (failed := _dns_failure(t, query, h.host)) is not None:
        return [failed]
    if t.status is not DnsStatus.OK or not t.records:
        return []
    if t.dnssec is not Dnssec.SECURE:
        return [Finding("dane-unauthenticated", Severity.WARNING, h.host)]
    out: list[Finding] = []
    if not secure:
        out.append(Finding("dane-mx-unsigned", Severity.WARNING, h.host))
    recs = [r for r in map(parse_tlsa, t.records) if r is not None]
    unusable = [r.text()[:60] for r in recs if not r.usable]
    if unusable:
        params = _p(records="; ".join(unusable))
        out.append(Finding("dane-unusable", Severity.WARNING, h.host, params))
    chains = [c for c in map(_chain, h.addresses) if c]
    if chains and any(r.usable for r in recs) and not rollover_ready(t.records, chains[0]):
        out.append(Finding("dane-rollover", Severity.INFO, h.host))
    return out


def _policy_findings(f: DomainFacts, null_only: bool) -> list[Finding]:
    d = f.domain
    out = _policy_lookup_failures(f)
    if (txt := _answered(f.txt)) is not None:
        out.append(_spf_finding(txt, d))
    if (dmarc := _answered(f.dmarc)) is not None:
        out.append(_dmarc_finding(dmarc, d))
    # A domain that receives no mail needs no MTA-STS or TLS reporting.
    if null_only:
        return out
    if (sts := _answered(f.mta_sts)) is not None:
        if _tagged(sts, "v=stsv1"):
            if problems := sts_record_problems(sts):
                params = _p(detail="; ".join(problems))
                out.append(Finding("mta-sts-record-invalid", Severity.ERROR, d, params))
            out += _mta_sts_policy(f)
        else:
            out.append(Finding("mta-sts-missing", Severity.INFO, d))
    if (rpt := _answered(f.tlsrpt)) is not None:
        out.append(_tlsrpt_finding(rpt, d))
    return out


def _tlsrpt_finding(rpt: tuple[str, ...], d: str) -> Finding:
    if not _tagged(rpt, "v=tlsrptv1"):
        return Finding("tlsrpt-missing", Severity.INFO, d)
    uris, problems = tlsrpt_problems(rpt)
    if problems:
        return Finding("tlsrpt-invalid", Severity.ERROR, d, _p(detail="; ".join(problems)))
    return Finding("tlsrpt-ok", Severity.OK, d, _p(rua=", ".join(uris)))


def _policy_lookup_failures(f: DomainFacts) -> list[Finding]:
    """A failed lookup is not a missing record: say which query failed instead."""
    d = f.domain
    looked = (
        (f.txt, f"{d} TXT"),
        (f.dmarc, f"_dmarc.{d} TXT"),
        (f.mta_sts, f"_mta-sts.{d} TXT"),
        (f.tlsrpt, f"_smtp._tls.{d} TXT"),
    )
    found = [_dns_failure(rec, query, d) for rec, query in looked if rec is not None]
    return [x for x in found if x is not None]


def _answered(rec: Records | None) -> tuple[str, ...] | None:
    """The records of a lookup that was made and did not fail (possibly none)."""
    if rec is None or rec.status in _DNS_FAILURE_IDS:
        return None
    return rec.records


def _tagged(records: tuple[str, ...], version: str) -> list[str]:
    """Records that start with `version` ("v=dmarc1"), ignoring spaces and case."""
    return [t for t in records if t.replace(" ", "").lower().startswith(version)]


def _spf_finding(records: tuple[str, ...], d: str) -> Finding:
    # "v=spf1" must be the whole record or be followed by a space (RFC 7208 §4.5).
    spf = [t for t in records if t.lower().startswith("v=spf1") and (len(t) == 6 or t[6] == " ")]
    if len(spf) > 1:
        return Finding("spf-multiple", Severity.ERROR, d, _p(count=len(spf)))
    if not spf:
        return Finding("spf-missing", Severity.WARNING, d)
    # Whole: the strings of a TXT record are joined at lookup, and a record is read in full.
    return Finding("spf-ok", Severity.OK, d, _p(record=spf[0]))


def _dmarc_finding(records: tuple[str, ...], d: str) -> Finding:
    dm = _tagged(records, "v=dmarc1")
    if not dm:
        return Finding("dmarc-missing", Severity.WARNING, d)
    if len(dm) > 1:
        return Finding("dmarc-multiple", Severity.ERROR, d, _p(count=len(dm)))
    tags = {}
    for part in dm[0].split(";"):
        k, _, v = part.strip().partition("=")
        tags[k.strip().lower()] = v.strip()
    if "p" not in tags:
        return Finding("dmarc-no-policy", Severity.ERROR, d)
    return Finding("dmarc-ok", Severity.OK, d, _p(policy=tags["p"]))


def mx_pattern_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: a pattern matches the host, "*." covering exactly one label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        return "." in host and host.split(".", 1)[1] == pattern[2:]
    return pattern == host


def _mta_sts_policy(f: DomainFacts) -> list[Finding]:
    d = f.domain
    p = f.policy
    if p is None or not p.fetched:
        return [
            Finding(
                "mta-sts-policy-unreachable",
                Severity.WARNING,
                d,
                _p(detail=p.error if p else "not fetched"),
            )
        ]
    if p.problems or p.mode not in ("enforce", "testing", "none"):
        detail = "; ".join(p.problems) or f"mode {p.mode!r}"
        params = _p(mode=p.mode or "-", detail=detail)
        return [Finding("mta-sts-policy-invalid", Severity.ERROR, d, params)]
    out: list[Finding] = []
    uncovered = [h.host for h in f.hosts if not sts_covers(p, h.host)]
    if uncovered and p.mode != "none":
        out.append(
            Finding("mta-sts-mx-mismatch", Severity.ERROR, d, _p(hosts=", ".join(uncovered)))
        )
    if (bad := _pkix_failures(f)) and p.mode != "none":
        sev = Severity.ERROR if p.mode == "enforce" else Severity.WARNING
        out.append(Finding("mta-sts-cert-invalid", sev, d, _p(mode=p.mode, hosts="; ".join(bad))))
    return out or [Finding("mta-sts-ok", Severity.OK, d, _p(mode=p.mode))]


def sts_covers(p: PolicyFacts, host: str) -> bool:
    return any(mx_pattern_matches(m, host) for m in p.mx_patterns)


def pkix_problem(t: TlsInfo) -> str | None:
    """Why an MTA-STS sender would refuse this TLS session (RFC 8461 §4.2): no STARTTLS, a
    failed handshake, a certificate not trusted or not naming the host; None if none."""
    if not t.offered:
        return "no STARTTLS"
    if not t.ok:
        return f"TLS failed: {t.error or 'handshake failed'}"
    if t.trusted is False:
        return f"certificate not trusted: {t.verify_error or 'no reason given'}"
    if t.name_matches is False:
        return "certificate does not name the host"
    return None


def greeted(s: Session | None) -> bool:
    """Whether the session got the server's 220 greeting (else TLS facts say nothing)."""
    step = next((st for st in s.steps if st.command == "CONNECT"), None) if s else None
    return step is not None and step.reply is not None and step.reply.code == 220


def _pkix_failures(f: DomainFacts) -> list[str]:
    return [
        f"{h.host} [{a.address}]: {why}"
        for h in f.hosts
        for a in h.addresses
        if a.session is not None
        and greeted(a.session)
        and (why := pkix_problem(a.session.tls)) is not None
    ]


def worst(findings: list[Finding]) -> Severity:
    return max((x.severity for x in findings), default=Severity.OK)
