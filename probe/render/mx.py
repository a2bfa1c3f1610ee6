"""Render `smtp-probe mx` findings: grouped by subject host, worst first."""

from __future__ import annotations

from probe.catalog import Locale
from probe.checks import DomainFacts, Finding, Severity
from probe.messages import message_json, say
from probe.render import Styler, plain
from probe.text import safe

SCHEMA = "smtp-probe/mx/1"
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


def to_json(
    facts: DomainFacts, findings: list[Finding], loc: Locale, status: int
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
        "exit_status": status,
    }


def to_text(facts: DomainFacts, findings: list[Finding], loc: Locale, style: Styler = plain) -> str:
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
            out.append(
                f"  {style(f'[{label}]', COLOURS[f.severity], True)} {safe(message(f, loc, 'message'))}"
            )
            if f.severity >= Severity.WARNING:
                out.append(f"      {loc.ui('mx.fix')}: {safe(message(f, loc, 'fix'))}")
                ref = loc.field("findings", f.id, "ref")
                if ref:
                    out.append(f"      ({ref}; id {f.id})")
    errors = sum(f.severity is Severity.ERROR for f in findings)
    warnings = sum(f.severity is Severity.WARNING for f in findings)
    out += ["", loc.ui("mx.summary", errors=errors, warnings=warnings)]
    return "\n".join(out)
