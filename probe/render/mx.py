"""Render `smtp-probe mx` findings: grouped by subject host, worst first."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from probe.catalog import Locale
from probe.checks import DomainFacts, Finding, Severity
from probe.messages import message_json, say
from probe.render import Styler, plain
from probe.sender import AddressVerdict, Answer
from probe.text import safe
from probe.tlsfacts import Handshake, TlsScan

WIDTH = 100  # long values (a whole SPF record) are wrapped to this for reading

SCHEMA = "smtp-probe/mx/2"
COLOURS = {
    Severity.ERROR: "red",
    Severity.WARNING: "yellow",
    Severity.INFO: "cyan",
    Severity.OK: "green",
}


def message(f: Finding, loc: Locale, field: str) -> str:
    template = loc.field("findings", f.id, field) or f.id
    try:
        return template.format(**{k: say(loc, v) for k, v in f.kwargs().items()})
    except (KeyError, IndexError, ValueError):
        return template


def _group(f: Finding, facts: DomainFacts) -> str:
    """The MX host a finding belongs to ("" for the domain itself)."""
    for h in facts.hosts:
        if f.subject == h.host or f.subject.startswith(f"{h.host} ["):
            return h.host
        if any(a.address == f.subject for a in h.addresses):
            return h.host
    return ""


def _answer_json(a: Answer, loc: Locale) -> dict[str, object]:
    return {
        "delivers": a.delivers,
        "reason": a.reason,
        "reason_text": loc.ui(f"mx.reason_{a.reason}"),
        "detail": a.detail,
    }


def verdicts_json(vs: Sequence[AddressVerdict], loc: Locale) -> list[dict[str, object]]:
    return [
        {
            "host": v.host,
            "address": v.address,
            "family": v.family,
            "starttls": v.starttls,
            "handshake": v.handshake,
            "pkix_valid": v.pkix,
            "dane": v.dane,
            "mta_sts_listed": v.sts_listed,
            "opportunistic": _answer_json(v.opportunistic, loc),
            "dane_enforcing": _answer_json(v.dane_sender, loc),
            "mta_sts_enforcing": _answer_json(v.sts_sender, loc),
        }
        for v in vs
    ]


def _word(a: Answer, loc: Locale) -> str:
    yes = {True: "mx.yes", False: "mx.no", None: "mx.unknown"}[a.delivers]
    return f"{loc.ui(yes)}: {loc.ui(f'mx.reason_{a.reason}')}"


def verdict_table(vs: Sequence[AddressVerdict], loc: Locale, style: Styler = plain) -> list[str]:
    """MX x address x the three answers, columns as wide as their widest cell."""
    if not vs:
        return []
    head = [loc.ui(f"mx.col_{c}") for c in ("mx", "address", "opportunistic", "dane", "sts")]
    rows = [
        [
            safe(v.host),
            v.address,
            _word(v.opportunistic, loc),
            _word(v.dane_sender, loc),
            _word(v.sts_sender, loc),
        ]
        for v in vs
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    out = ["", style(loc.ui("mx.verdict_title"), None, True)]
    out += [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [head, *rows]
    ]
    return out


def _scanned(facts: DomainFacts) -> list[tuple[str, str, TlsScan]]:
    return [
        (h.host, a.address, a.tls_scan)
        for h in facts.hosts
        for a in h.addresses
        if a.tls_scan is not None
    ]


def _handshake_json(hs: Handshake | None) -> dict[str, object] | None:
    if hs is None:
        return None
    return {
        "protocol": hs.protocol,
        "cipher": hs.cipher,
        "key_exchange": hs.key_exchange,
        "forward_secrecy": hs.forward_secret,
        "group": hs.group,
        "group_note": hs.group_note,
        "certificate_key": hs.key,
        "certificate_signature": hs.signature,
        "signature_note": hs.signature_note,
    }


def tls_scan_json(facts: DomainFacts) -> list[dict[str, object]]:
    """`--tls-scan`'s facts per address (an empty list without the option)."""
    return [
        {
            "host": host,
            "address": address,
            "connections": scan.connections,
            "skipped": scan.skipped or None,
            "versions": {
                v.version: {"state": v.state.value, "detail": v.detail, "cipher": v.cipher}
                for v in scan.versions
            },
            "mail_before_starttls": (
                {"accepted": scan.mail.accepted, "reply": scan.mail.reply} if scan.mail else None
            ),
            "handshake": _handshake_json(scan.handshake),
        }
        for host, address, scan in _scanned(facts)
    ]


def _handshake_lines(hs: Handshake, loc: Locale) -> list[str]:
    fs = {True: "", False: loc.ui("mx.scan_no_fs"), None: ""}[hs.forward_secret]
    group = hs.group or loc.ui("mx.scan_group_unknown")
    return [
        loc.ui("mx.scan_handshake", protocol=hs.protocol, cipher=safe(hs.cipher))
        + f" ({loc.ui('mx.scan_kx', kx=hs.key_exchange)}{fs})",
        loc.ui("mx.scan_group", group=group),
        loc.ui(
            "mx.scan_certificate",
            key=hs.key or loc.ui("mx.unknown"),
            signature=hs.signature or loc.ui("mx.unknown"),
        ),
    ]


def _scan_lines(scan: TlsScan, loc: Locale) -> list[str]:
    if scan.skipped:
        return [loc.ui("mx.scan_skipped", why=safe(scan.skipped))]
    versions = ", ".join(
        f"{v.version} {loc.ui(f'mx.scan_{v.state.value}')}"
        + (f" ({safe(v.detail)})" if v.detail else "")
        for v in scan.versions
    )
    out = [loc.ui("mx.scan_versions", versions=versions)]
    if scan.mail is not None:
        said = {True: "mx.scan_mail_accepted", False: "mx.scan_mail_refused", None: "mx.unknown"}
        word = loc.ui(said[scan.mail.accepted])
        out.append(loc.ui("mx.scan_mail", answer=word, reply=safe(scan.mail.reply)))
    if scan.handshake is not None:
        out += _handshake_lines(scan.handshake, loc)
    return out


def scan_text(facts: DomainFacts, loc: Locale, style: Styler = plain) -> list[str]:
    """`--tls-scan`'s facts, address by address (nothing without the option)."""
    scanned = _scanned(facts)
    if not scanned:
        return []
    out = ["", style(loc.ui("mx.scan_title"), None, True)]
    for host, address, scan in scanned:
        out.append(
            f"  {safe(host)} [{address}]"
            + f"  ({loc.ui('mx.scan_connections', count=scan.connections)})"
        )
        out += [f"    {line}" for line in _scan_lines(scan, loc)]
    return out


def _wrapped(text: str, indent: str) -> list[str]:
    """A message wrapped for reading; a long record keeps every character, only split."""
    return textwrap.wrap(
        text, WIDTH, initial_indent="", subsequent_indent=indent, break_on_hyphens=False
    ) or [""]


def to_json(
    facts: DomainFacts,
    findings: list[Finding],
    loc: Locale,
    status: int,
    verdicts: Sequence[AddressVerdict] = (),
) -> dict[str, object]:
    return {
        "schema": SCHEMA,
        "domain": facts.domain,
        "mx": [
            {
                "host": h.host,
                "preference": h.preference,
                "addresses": [a.address for a in h.addresses],
            }
            for h in facts.hosts
        ],
        "findings": [
            {
                "id": f.id,
                "severity": f.severity.label,
                "subject": f.subject,
                "params": {k: message_json(v) or v for k, v in f.params},
                "message": message(f, loc, "message"),
                "fix": message(f, loc, "fix"),
                "reference": loc.field("findings", f.id, "ref"),
            }
            for f in sorted(findings, key=lambda f: -f.severity)
        ],
        "addresses": verdicts_json(verdicts, loc),
        "tls_scan": tls_scan_json(facts),
        "exit_status": status,
    }


def to_text(
    facts: DomainFacts,
    findings: list[Finding],
    loc: Locale,
    style: Styler = plain,
    verdicts: Sequence[AddressVerdict] = (),
) -> str:
    out = [style(loc.ui("mx.title", domain=safe(facts.domain)), None, True)]
    groups: dict[str, list[Finding]] = {"": []}
    for h in facts.hosts:
        groups.setdefault(h.host, [])
    for f in findings:
        groups.setdefault(_group(f, facts), []).append(f)
    order = sorted(
        groups, key=lambda g: (g != "", -max((f.severity for f in groups[g]), default=0))
    )
    for g in order:
        items = sorted(groups[g], key=lambda f: -f.severity)
        if not items:
            continue
        host = next((h for h in facts.hosts if h.host == g), None)
        if g:
            addrs = ", ".join(a.address for a in host.addresses) if host else ""
            pref = f"{host.preference} " if host else ""
            out.append("")
            out.append(style(f"MX {pref}{safe(g)}" + (f"  ({addrs})" if addrs else ""), None, True))
        else:
            out.append("")
            out.append(style(safe(facts.domain), None, True))
        for f in items:
            label = loc.ui(f"mx.severity_{f.severity.label}")
            lines = _wrapped(safe(message(f, loc, "message")), "      ")
            out.append(f"  {style(f'[{label}]', COLOURS[f.severity], True)} {lines[0]}")
            out += lines[1:]
            if f.severity >= Severity.WARNING:
                out.append(f"      {loc.ui('mx.fix')}: {safe(message(f, loc, 'fix'))}")
                ref = loc.field("findings", f.id, "ref")
                if ref:
                    out.append(f"      ({ref}; id {f.id})")
    out += verdict_table(verdicts, loc, style)
    out += scan_text(facts, loc, style)
    errors = sum(f.severity is Severity.ERROR for f in findings)
    warnings = sum(f.severity is Severity.WARNING for f in findings)
    out += ["", loc.ui("mx.summary", errors=errors, warnings=warnings)]
    return "\n".join(out)
