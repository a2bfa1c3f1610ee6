"""Render `smtp-probe mx` findings: grouped by subject host, worst first."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from probe.catalog import Locale
from probe.checks import DomainFacts, Finding, Severity
from probe.render import Styler, plain
from probe.sender import AddressVerdict, Answer
from probe.text import safe

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
        return template.format(**f.kwargs())
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
                "params": dict(f.params),
                "message": message(f, loc, "message"),
                "fix": message(f, loc, "fix"),
                "reference": loc.field("findings", f.id, "ref"),
            }
            for f in sorted(findings, key=lambda f: -f.severity)
        ],
        "addresses": verdicts_json(verdicts, loc),
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
    errors = sum(f.severity is Severity.ERROR for f in findings)
    warnings = sum(f.severity is Severity.WARNING for f in findings)
    out += ["", loc.ui("mx.summary", errors=errors, warnings=warnings)]
    return "\n".join(out)
