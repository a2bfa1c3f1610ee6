"""`--format github`: GitHub Actions workflow commands, one per unmet expectation or failure.

`::error title=T::MESSAGE` lines become annotations on the run. GitHub reads a command up to
the end of its line, so the message (its "data") escapes %, CR and LF, and a property such as
the title escapes : and , as well (the rules of the Actions toolkit's `issueCommand`).
A temporary failure (4xx, greylisting, a timeout) is a warning, anything worse an error;
a target that passes gets one notice, so the run shows what was checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from probe.catalog import Locale
from probe.checks import DomainFacts, Finding, Severity
from probe.messages import said
from probe.render import views
from probe.render.mx import message
from probe.render.probe import to_json
from probe.result import ProbeResult
from probe.text import safe

TEMPFAIL = 75


def escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(s: str) -> str:
    return escape_data(s).replace(":", "%3A").replace(",", "%2C")


def command(kind: str, title: str, text: str) -> str:
    """One workflow command line (`kind` is error, warning or notice)."""
    return f"::{kind} title={escape_property(title)}::{escape_data(text)}\n"


def probe_commands(doc: Mapping[str, Any], loc: Locale, notice: bool = True) -> str:
    """The commands for one probe document (or batch record)."""
    target = safe(str((doc.get("target") or {}).get("input") or doc.get("input")))
    title = f"smtp-probe: {target}"
    err = doc.get("error")
    if isinstance(err, dict):
        detail = said(loc, err)  # the refusal in the report's language
        return command("error", title, safe(f"{loc.ui('report.input_error')}: {detail}"))
    status = doc.get("exit_status")
    kind = "warning" if status == TEMPFAIL else "error"
    out = []
    for e in doc.get("expectations") or ():
        if e.get("met"):
            continue
        detail = str(e.get("detail"))
        text = loc.ui(
            "report.expectation_failed", expectation=e.get("expectation"), detail=said(loc, e)
        )
        step = views.quoted_step(doc, detail)
        body = views.tip(step, loc) if step is not None else ""
        out.append(
            command("error", f"{title} --expect {e.get('expectation')}", safe(text) + "\n" + body)
        )
    if not out and status != 0:
        bad = next((b for s in doc.get("sessions") or () if (b := views.failed(s))), None)
        body = views.tip(bad, loc) if bad is not None else ""
        out.append(
            command(kind, title, views.probe_sentence(doc, loc) + ("\n" + body if body else ""))
        )
    if not out and notice:
        out.append(command("notice", title, views.probe_sentence(doc, loc)))
    return "".join(out)


def probe_github(result: ProbeResult, loc: Locale) -> str:
    return probe_commands(to_json(result, loc), loc)


def mx_github(facts: DomainFacts, findings: Sequence[Finding], loc: Locale) -> str:
    """An error per failing finding, a warning per warning; a notice when there is neither."""
    out = []
    for f in sorted(findings, key=lambda f: -f.severity):
        if f.severity < Severity.WARNING:
            continue
        kind = "error" if f.severity is Severity.ERROR else "warning"
        title = f"smtp-probe mx: {safe(f.subject)}"
        text = f"{safe(message(f, loc, 'message'))}\n{loc.ui('report.fix')}: {safe(message(f, loc, 'fix'))}"
        out.append(command(kind, title, text))
    if not out:
        errors = sum(f.severity is Severity.ERROR for f in findings)
        sentence = loc.ui(
            "report.mx_sentence_ok", domain=safe(facts.domain), warnings=0, errors=errors
        )
        out.append(command("notice", f"smtp-probe mx: {safe(facts.domain)}", sentence))
    return "".join(out)


class BatchGithub:
    """A command per failing record (or unmet expectation), then one notice with the counts."""

    def __init__(self, loc: Locale) -> None:
        self.loc, self.done, self.failing = loc, 0, 0

    def start(self) -> str:
        return ""

    def record(self, rec: Mapping[str, Any]) -> str:
        self.done += 1
        self.failing += rec.get("exit_status") != 0
        return probe_commands(rec, self.loc, notice=False)

    def end(self) -> str:
        accepted = self.done - self.failing
        text = self.loc.ui(
            "report.batch_sentence", count=self.done, failing=self.failing, accepted=accepted
        )
        return command("notice", "smtp-probe batch", text)
