"""Pure MX-setup checks: facts gathered from DNS and SMTP in, findings a mail admin can act on out.

Every finding has a stable id; its message, fix and reference live in the locale files
(`locales/<lang>/findings.toml`), keyed by that id.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum

from probe.messages import msg
from probe.result import Certificate, DnsStatus, Session, TlsInfo
from probe.target import is_ip


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


@dataclass(frozen=True, slots=True)
class AddressFacts:
    address: str
    ptr: Records
    ptr_forward: tuple[str, ...] = ()  # addresses of the PTR names, for forward confirmation
    session: Session | None = None
    tls_der: bytes | None = None


@dataclass(frozen=True, slots=True)
class HostFacts:
    host: str
    preference: int
    a: Records
    aaaa: Records
    addresses: tuple[AddressFacts, ...] = ()
    tlsa: Records | None = None
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
    DnsStatus.REFUSED: "dns-lame",
    DnsStatus.ERROR: "dns-error",
}


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
    if f.mx.status in _DNS_FAILURE_IDS:
        out.append(Finding(_DNS_FAILURE_IDS[f.mx.status], Severity.ERROR, d, _p(query=f"{d} MX")))
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
    for h in f.hosts:
        out += _host_findings(h, f.allow_private)
    usable = [h for h in f.hosts if h.addresses]
    if usable and not null_only:
        if any(h.aaaa.records for h in usable):
            out.append(Finding("mx-ipv6", Severity.OK, d))
        else:
            out.append(Finding("mx-no-ipv6", Severity.INFO, d))
    out += _policy_findings(f, null_only)
    return out


def _host_findings(h: HostFacts, allow_private: bool) -> list[Finding]:
    out: list[Finding] = []
    if is_ip(h.host):
        return [Finding("mx-target-ip", Severity.ERROR, h.host)]
    if h.invalid is not None:
        return [Finding("mx-target-invalid", Severity.ERROR, h.host, _p(name=h.invalid))]
    if h.a.status is DnsStatus.NXDOMAIN:
        return [Finding("mx-target-nxdomain", Severity.ERROR, h.host)]
    if h.a.status in _DNS_FAILURE_IDS:
        out.append(
            Finding(_DNS_FAILURE_IDS[h.a.status], Severity.ERROR, h.host, _p(query=f"{h.host} A"))
        )
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
            out += _session_findings(a, h)
    return out


def _ptr_findings(a: AddressFacts, host: str) -> list[Finding]:
    names = [r.rstrip(".").lower() for r in a.ptr.records]
    if not names:
        return [Finding("ptr-missing", Severity.WARNING, a.address, _p(host=host))]
    if a.address not in a.ptr_forward:
        return [Finding("ptr-not-confirmed", Severity.WARNING, a.address, _p(ptr=", ".join(names)))]
    return [Finding("ptr-ok", Severity.OK, a.address, _p(ptr=", ".join(names)))]


def _session_findings(a: AddressFacts, h: HostFacts) -> list[Finding]:
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
        *_tls_findings(s.tls, a, h, subj),
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


def _tls_findings(t: TlsInfo, a: AddressFacts, h: HostFacts, subj: str) -> list[Finding]:
    if not t.offered:
        return [Finding("starttls-missing", Severity.ERROR, subj)]
    if not t.ok:
        detail = t.error or msg("checks.handshake_failed")
        return [Finding("starttls-failed", Severity.ERROR, subj, _p(detail=detail))]
    out = [Finding("starttls-ok", Severity.OK, subj, _p(protocol=t.protocol or "?"))]
    if t.certificate is not None:
        out += _cert_findings(t, t.certificate, subj)
    if h.tlsa is not None and h.tlsa.records and a.tls_der is not None:
        out += _dane(h, a, subj)
    return out


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
    parts = record.split()
    if len(parts) < 4:
        return False
    selector, mtype = parts[1], parts[2]
    data = "".join(parts[3:]).lower()
    content: bytes | None = der
    if selector == "1":
        from probe.certs import spki

        content = spki(der)
    if content is None:  # a certificate whose key cannot be read matches nothing
        return False
    if mtype == "0":
        return content.hex() == data
    if mtype == "1":
        return hashlib.sha256(content).hexdigest() == data
    if mtype == "2":
        return hashlib.sha512(content).hexdigest() == data
    return False


def _dane(h: HostFacts, a: AddressFacts, subj: str) -> list[Finding]:
    assert h.tlsa is not None and a.tls_der is not None
    out: list[Finding] = []
    if not h.tlsa.authenticated:
        out.append(Finding("dane-unauthenticated", Severity.WARNING, h.host))
    ee = [r for r in h.tlsa.records if r.split()[:1] in (["3"], ["1"])]
    if ee and any(tlsa_matches(r, a.tls_der) for r in ee):
        out.append(Finding("dane-match", Severity.OK, subj))
    elif ee:
        out.append(Finding("dane-mismatch", Severity.ERROR, subj))
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
            out += _mta_sts_policy(f)
        else:
            out.append(Finding("mta-sts-missing", Severity.INFO, d))
    if (rpt := _answered(f.tlsrpt)) is not None:
        if _tagged(rpt, "v=tlsrptv1"):
            out.append(Finding("tlsrpt-ok", Severity.OK, d))
        else:
            out.append(Finding("tlsrpt-missing", Severity.INFO, d))
    return out


def _policy_lookup_failures(f: DomainFacts) -> list[Finding]:
    """A failed lookup is not a missing record: say which query failed instead."""
    d = f.domain
    return [
        Finding(_DNS_FAILURE_IDS[rec.status], Severity.ERROR, d, _p(query=query))
        for rec, query in (
            (f.txt, f"{d} TXT"),
            (f.dmarc, f"_dmarc.{d} TXT"),
            (f.mta_sts, f"_mta-sts.{d} TXT"),
            (f.tlsrpt, f"_smtp._tls.{d} TXT"),
        )
        if rec is not None and rec.status in _DNS_FAILURE_IDS
    ]


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
    return Finding("spf-ok", Severity.OK, d, _p(record=spf[0][:200]))


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
    if p.mode not in ("enforce", "testing", "none") or not p.mx_patterns:
        return [Finding("mta-sts-policy-invalid", Severity.ERROR, d, _p(mode=p.mode or "-"))]
    uncovered = [
        h.host for h in f.hosts if not any(mx_pattern_matches(m, h.host) for m in p.mx_patterns)
    ]
    if uncovered:
        return [Finding("mta-sts-mx-mismatch", Severity.ERROR, d, _p(hosts=", ".join(uncovered)))]
    return [Finding("mta-sts-ok", Severity.OK, d, _p(mode=p.mode))]


def worst(findings: list[Finding]) -> Severity:
    return max((x.severity for x in findings), default=Severity.OK)
