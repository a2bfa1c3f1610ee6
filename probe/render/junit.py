"""`--format junit`: JUnit XML for CI servers, one testsuite per target.

A target's testcases: its verdict, each `--expect` expectation, each MX session (for `mx`,
each finding too). A failure carries the reply that broke it and what the reply means. The
shape follows the strict JUnit schema that CI servers accept (fixtures/junit.xsd):
every testsuite has properties, system-out and system-err, and inside `testsuites` a package
and an id; timestamps are UTC without a zone, as that schema wants them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
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

PACKAGE = "smtp-probe"
HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n'
TAIL = "</testsuites>\n"


def _case(
    suite: ET.Element,
    classname: str,
    name: str,
    seconds: float,
    failure: tuple[str, str, str] | None,
) -> None:
    """A testcase; `failure` is (type, message, text)."""
    case = ET.SubElement(
        suite, "testcase", name=name or "-", classname=classname, time=f"{seconds:.3f}"
    )
    if failure is not None:
        kind, msg, text = failure
        ET.SubElement(case, "failure", type=kind, message=msg).text = text


def _suite(index: int, name: str, timestamp: str, props: Mapping[str, str]) -> ET.Element:
    suite = ET.Element(
        "testsuite",
        package=PACKAGE,
        id=str(index),
        name=name or "-",
        timestamp=timestamp[:19],
        hostname=name or "-",
    )
    p = ET.SubElement(suite, "properties")
    for k, v in props.items():
        ET.SubElement(p, "property", name=k, value=v)
    return suite


def _close(suite: ET.Element, out: str, seconds: float) -> str:
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(c.find("failure") is not None for c in cases)))
    suite.set("errors", "0")
    suite.set("time", f"{seconds:.3f}")
    ET.SubElement(suite, "system-out").text = out
    ET.SubElement(suite, "system-err")
    return ET.tostring(suite, encoding="unicode") + "\n"


def explained(step: Mapping[str, Any], loc: Locale) -> str:
    """The reply lines as received (or the error), then what they mean and what to do."""
    return views.tip(step, loc)


def _session_cases(suite: ET.Element, sessions: Sequence[Mapping[str, Any]], loc: Locale) -> None:
    for s in sessions:
        total = sum(float(st.get("elapsed_ms") or 0) for st in s.get("steps") or ())
        bad = views.failed(s)
        failure = None
        if bad is not None:
            shown = " | ".join((bad.get("reply") or {}).get("lines") or ()) or said(
                loc, bad.get("error") or {}
            )
            msg = loc.ui(
                "report.session_failed",
                host=s.get("host"),
                address=s.get("address"),
                reply=shown,
            )
            failure = (str(s.get("outcome")), safe(msg), explained(bad, loc))
        name = f"{s.get('host')} [{s.get('address')}]:{s.get('port')}"
        _case(suite, f"{PACKAGE}.session", safe(name), total / 1000, failure)


def probe_suite(doc: Mapping[str, Any], loc: Locale, index: int, timestamp: str = "") -> str:
    """One target's testsuite, from its probe document (or a batch record)."""
    target = doc.get("target") or {}
    name = safe(str(target.get("input") or doc.get("input") or "-"))
    stamp = str(doc.get("started_at") or timestamp)
    verdict = str(doc.get("verdict", "error"))
    suite = _suite(
        index, name, stamp, {"verdict": verdict, "exit_status": str(doc.get("exit_status"))}
    )
    err = doc.get("error")
    if isinstance(err, dict):  # a batch input line that was not probed
        detail = safe(f"{err.get('kind')}: {said(loc, err)}")
        _case(suite, f"{PACKAGE}.verdict", "verdict", 0, ("error", detail, detail))
        return _close(suite, detail, 0)
    sentence = views.probe_sentence(doc, loc)
    ok = doc.get("exit_status") == 0
    _case(suite, f"{PACKAGE}.verdict", "verdict", 0, None if ok else (verdict, sentence, sentence))
    for e in doc.get("expectations") or ():
        failure = None
        if not e.get("met"):
            detail = str(e.get("detail"))
            msg = loc.ui(
                "report.expectation_failed", expectation=e.get("expectation"), detail=said(loc, e)
            )
            step = views.quoted_step(doc, detail)
            body = explained(step, loc) if step is not None else safe(detail)
            failure = ("expectation", safe(msg), body)
        _case(suite, f"{PACKAGE}.expect", safe(str(e.get("expectation"))), 0, failure)
    _session_cases(suite, list(doc.get("sessions") or ()), loc)
    return _close(suite, sentence, float(doc.get("elapsed_ms") or 0) / 1000)


def probe_junit(result: ProbeResult, loc: Locale) -> str:
    return HEAD + probe_suite(to_json(result, loc), loc, 0) + TAIL


def mx_junit(
    facts: DomainFacts,
    findings: Sequence[Finding],
    loc: Locale,
    fail_on: Severity,
    timestamp: str,
) -> str:
    """The domain's testsuite: a testcase per finding (failing from `fail_on` up) and per
    session to an MX address."""
    name = safe(facts.domain)
    suite = _suite(0, name, timestamp, {"domain": facts.domain})
    for f in sorted(findings, key=lambda f: -f.severity):
        text = safe(message(f, loc, "message"))
        failure = None
        if f.severity >= fail_on:
            fix = safe(message(f, loc, "fix"))
            failure = (f.severity.label, text, f"{text}\n{loc.ui('report.fix')}: {fix}")
        _case(suite, f"{PACKAGE}.mx.{f.id}", safe(f"{f.subject}: {f.id}"), 0, failure)
    _session_cases(suite, views.mx_sessions(facts, loc), loc)
    return HEAD + _close(suite, name, 0) + TAIL


class BatchJunit:
    """A batch as one `testsuites` document, written one testsuite per record as it arrives."""

    def __init__(self, loc: Locale, timestamp: str) -> None:
        self.loc, self.timestamp, self.index = loc, timestamp, 0

    def start(self) -> str:
        return HEAD

    def record(self, rec: Mapping[str, Any]) -> str:
        self.index += 1
        return probe_suite(rec, self.loc, self.index - 1, self.timestamp)

    def end(self) -> str:
        return TAIL
