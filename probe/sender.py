"""Pure: the sender's-eye verdict per MX address. Would an opportunistic sender deliver, one
that enforces DANE (RFC 7672), one that enforces MTA-STS (RFC 8461)? Each answer comes with
a reason id (its words are in the locale's `mx.reason_*`) and the evidence."""

from __future__ import annotations

from dataclasses import dataclass

from probe.checks import (
    AddressFacts,
    DomainFacts,
    Finding,
    HostFacts,
    Severity,
    check,
    dane_of,
    greeted,
    mx_secure,
    pkix_problem,
    sts_covers,
)
from probe.dane import DaneCheck, DaneStatus
from probe.mtasts import sts_record_problems
from probe.result import DnsStatus, TlsInfo
from probe.tlsfacts import TlsScan, key_exchange


@dataclass(frozen=True, slots=True)
class Answer:
    delivers: bool | None  # None: not connected, nothing to say
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AddressVerdict:
    host: str
    address: str
    starttls: bool | None
    handshake: bool | None
    pkix: bool | None  # trusted and naming the host
    dane: str
    sts_listed: bool | None
    opportunistic: Answer
    dane_sender: Answer
    sts_sender: Answer

    @property
    def family(self) -> int:
        return 6 if ":" in self.address else 4

    def answers(self) -> tuple[bool | None, bool | None, bool | None]:
        return (self.opportunistic.delivers, self.dane_sender.delivers, self.sts_sender.delivers)


def _opportunistic(a: AddressFacts) -> Answer:
    s = a.session
    if s is None:
        return Answer(None, "not-connected")
    if not greeted(s):
        return Answer(False, "unreachable")
    t = s.tls
    if not t.offered:
        return Answer(True, "plaintext")
    if not t.ok:
        # MTAs that deliver opportunistically retry in plaintext after a failed handshake.
        return Answer(True, "plaintext-after-tls-failure", t.error or "")
    return Answer(True, "tls", t.protocol or "")


def _tls_missing(t: TlsInfo) -> str | None:
    if not t.offered:
        return "no STARTTLS"
    if not t.ok:
        return t.error or "handshake failed"
    return None


def _dane(h: HostFacts, a: AddressFacts, d: DaneCheck, base: Answer) -> Answer:
    if base.delivers is not True:
        return base
    if d.status is DaneStatus.NONE:
        return Answer(True, "dane-none", d.detail)
    if d.status is DaneStatus.BOGUS:
        return Answer(False, "dane-bogus", d.detail)
    looked_up = h.tlsa is not None and h.tlsa.status is DnsStatus.OK
    if d.status is DaneStatus.INDETERMINATE and not looked_up:
        return Answer(False, "dane-lookup-failed", d.detail)
    assert a.session is not None
    if (why := _tls_missing(a.session.tls)) is not None:
        return Answer(False, "dane-no-tls", why)
    if d.status is DaneStatus.UNUSABLE:
        return Answer(True, "dane-unusable", d.detail)
    if d.status is DaneStatus.VALIDATED:
        return Answer(True, "dane-valid", d.record or d.detail)
    return Answer(False, "dane-mismatch", d.detail)


def _sts(f: DomainFacts, h: HostFacts, a: AddressFacts, base: Answer) -> Answer:
    if base.delivers is not True:
        return base
    sts = f.mta_sts.records if f.mta_sts is not None else ()
    if not any(r.replace(" ", "").lower().startswith("v=stsv1") for r in sts):
        return Answer(True, "sts-none")
    p = f.policy
    if sts_record_problems(sts) or p is None or not p.fetched or p.problems:
        why = p.error if p is not None and p.error else "; ".join(p.problems if p else ())
        return Answer(True, "sts-unusable", why)
    if p.mode != "enforce":
        return Answer(True, "sts-not-enforced", p.mode or "")
    if not sts_covers(p, h.host):
        return Answer(False, "sts-not-listed", ", ".join(p.mx_patterns))
    assert a.session is not None
    if (problem := pkix_problem(a.session.tls)) is not None:
        return Answer(False, "sts-pkix", problem)
    return Answer(True, "sts-valid")


def verdicts(f: DomainFacts) -> list[AddressVerdict]:
    """One verdict per MX address, in the order the hosts and addresses were found."""
    secure = mx_secure(f)
    out = []
    for h in f.hosts:
        for a in h.addresses:
            t = a.session.tls if a.session is not None and greeted(a.session) else None
            base = _opportunistic(a)
            d = dane_of(h, a, secure)
            listed = sts_covers(f.policy, h.host) if f.policy and f.policy.fetched else None
            out.append(
                AddressVerdict(
                    h.host,
                    a.address,
                    t.offered if t else None,
                    t.ok if t and t.offered else None,
                    pkix_problem(t) is None if t and t.ok else None,
                    d.status.value,
                    listed,
                    base,
                    _dane(h, a, d, base),
                    _sts(f, h, a, base),
                )
            )
    return out


def behaviour(v: AddressVerdict) -> str:
    """What a sender meets at this address, in a few words to compare addresses by."""
    words = {True: "yes", False: "no", None: "-"}
    answers = "/".join(words[x] for x in v.answers())
    return (
        f"STARTTLS {words[v.starttls]}, TLS {words[v.handshake]}, PKIX {words[v.pkix]}, "
        f"DANE {v.dane}, delivers {answers}"
    )


def pool_findings(f: DomainFacts, vs: list[AddressVerdict]) -> list[Finding]:
    """What differs across the pool: STARTTLS on some MX addresses only, several
    certificates behind one host name, IPv6 addresses that behave unlike the IPv4 ones."""
    out: list[Finding] = []
    reached = [v for v in vs if v.starttls is not None]
    offering = [f"{v.host} [{v.address}]" for v in reached if v.starttls]
    missing = [f"{v.host} [{v.address}]" for v in reached if not v.starttls]
    if offering and missing:
        params = (("offering", ", ".join(offering)), ("missing", ", ".join(missing)))
        out.append(Finding("pool-starttls-inconsistent", Severity.WARNING, f.domain, params))
    for h in f.hosts:
        certs = {
            a.session.tls.certificate.sha256
            for a in h.addresses
            if a.session is not None and a.session.tls.certificate is not None
        }
        if len(certs) > 1:
            out.append(
                Finding("pool-cert-differs", Severity.INFO, h.host, (("count", str(len(certs))),))
            )
        v4 = {behaviour(v) for v in vs if v.host == h.host and v.family == 4}
        v6 = {behaviour(v) for v in vs if v.host == h.host and v.family == 6}
        if v4 and v6 and v4 != v6:
            params = (("v4", " | ".join(sorted(v4))), ("v6", " | ".join(sorted(v6))))
            out.append(Finding("pool-ipv6-differs", Severity.WARNING, h.host, params))
    return out


def _without_forward_secrecy(scan: TlsScan) -> list[str]:
    """The suites without forward secrecy the server chose: in the probe's own handshake, and
    in the scan's, where the client offered everything and the choice was the server's."""
    chosen = [(v.version, v.cipher) for v in scan.versions if v.cipher]
    if (hs := scan.handshake) is not None:
        chosen.insert(0, (hs.protocol, hs.cipher))
    weak = [f"{p} {c}" for p, c in chosen if key_exchange(p, c)[1] is False]
    return list(dict.fromkeys(weak))


def _scan_findings(subject: str, scan: TlsScan) -> list[Finding]:
    """What `--tls-scan` found at one address that a mail admin may act on."""
    out: list[Finding] = []
    accepted = scan.accepted()
    if legacy := scan.legacy():
        params = (("versions", ", ".join(legacy)), ("accepted", ", ".join(accepted)))
        out.append(Finding("tls-legacy-versions", Severity.WARNING, subject, params))
    elif accepted:
        out.append(
            Finding("tls-versions-ok", Severity.OK, subject, (("accepted", ", ".join(accepted)),))
        )
    if scan.mail is not None and scan.mail.accepted is not None:
        # RFC 3207 §4: a publicly referenced MX must not require STARTTLS; taking MAIL in
        # plaintext is what it should do, told only as a fact.
        fid = "smtp-mail-before-starttls" if scan.mail.accepted else "smtp-starttls-required"
        sev = Severity.INFO if scan.mail.accepted else Severity.WARNING
        out.append(Finding(fid, sev, subject, (("reply", scan.mail.reply),)))
    if weak := _without_forward_secrecy(scan):
        suites = (("ciphers", ", ".join(weak)),)
        out.append(Finding("tls-no-forward-secrecy", Severity.WARNING, subject, suites))
    return out


def scan_findings(f: DomainFacts) -> list[Finding]:
    """The findings of `mx --tls-scan`, address by address (none without the option)."""
    return [
        x
        for h in f.hosts
        for a in h.addresses
        if a.tls_scan is not None
        for x in _scan_findings(f"{h.host} [{a.address}]", a.tls_scan)
    ]


def assess(f: DomainFacts) -> tuple[list[Finding], list[AddressVerdict]]:
    """The findings of the checks, of the pool and of the TLS scan, and the verdict per
    address."""
    vs = verdicts(f)
    return check(f) + pool_findings(f, vs) + scan_findings(f), vs
