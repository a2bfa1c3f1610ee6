"""`--format html`: one self-contained page per run (no fetch when opened, no script at all).

Templates live beside this module (`templates/*.html.j2`, package data) and are filled by
jinja2 with autoescaping always on: every text from a server reaches the page as text. The
page's Content-Security-Policy forbids scripts and fetches besides, so even a mistake in a
template could not make server text run or load anything. jinja2 is imported only here,
when a report is asked for.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from probe.catalog import Locale
from probe.checks import DomainFacts, Finding, Severity
from probe.messages import said
from probe.render import views
from probe.render.mx import message
from probe.render.probe import to_json
from probe.result import ProbeResult, Verdict
from probe.sender import AddressVerdict
from probe.text import safe
from probe.verdict import exit_status

if TYPE_CHECKING:
    import jinja2

SLOWEST = 10
# The summary lists this many failing targets; each still has its own section on the page.
FAILING_LISTED = 500
STATES = {0: "ok", 75: "warn"}


def environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("probe.render", "templates"),
        autoescape=True,  # never off: server text must stay text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def state_of(exit_status: object) -> str:
    return STATES.get(exit_status, "bad") if isinstance(exit_status, int) else "bad"


def _verdict_badge(doc: Mapping[str, Any], loc: Locale) -> views.Badge:
    word = loc.ui(f"verdict.{doc.get('verdict')}")
    return views.Badge(loc.ui("probe.verdict"), state_of(doc.get("exit_status")), word)


def _verdict_state(verdict: str) -> str:
    try:
        return state_of(exit_status(Verdict(verdict)))
    except ValueError:  # an input that was not probed
        return "bad"


def probe_context(doc: Mapping[str, Any], loc: Locale, prefix: str = "") -> dict[str, Any]:
    """What a probe document shows: the parts the probe page and a batch section share."""
    sessions = list(doc.get("sessions") or ())
    return {
        "sentence": views.probe_sentence(doc, loc),
        "state": state_of(doc.get("exit_status")),
        "chart": views.chart(sessions, loc, prefix),
        "sessions": views.session_views(sessions, loc, prefix),
        "tree": views.probe_tree(doc, loc, _verdict_badge(doc, loc)),
        "expectations": [
            (safe(str(e.get("expectation"))), bool(e.get("met")), safe(said(loc, e)))
            for e in doc.get("expectations") or ()
        ],
    }


def probe_page(result: ProbeResult, loc: Locale) -> str:
    doc = to_json(result, loc)
    target = safe(result.target.display or result.target.raw)
    page = environment().get_template("probe.html.j2")
    return page.render(
        loc=loc, title=loc.ui("report.title_probe", target=target), **probe_context(doc, loc)
    )


def mx_page(
    facts: DomainFacts,
    findings: Sequence[Finding],
    loc: Locale,
    status: int,
    verdicts: Sequence[AddressVerdict] = (),
) -> str:
    errors = sum(f.severity is Severity.ERROR for f in findings)
    warnings = sum(f.severity is Severity.WARNING for f in findings)
    key = "report.mx_sentence_bad" if errors else "report.mx_sentence_ok"
    domain = safe(facts.domain)
    sentence = loc.ui(key, domain=domain, errors=errors, warnings=warnings)
    verdict = views.Badge(loc.ui("probe.verdict"), state_of(status), sentence)
    sessions = views.mx_sessions(facts, loc)
    rows = [
        (
            f.severity.label,
            loc.ui(f"mx.severity_{f.severity.label}"),
            safe(f.subject),
            safe(message(f, loc, "message")),
            safe(message(f, loc, "fix")) if f.severity >= Severity.WARNING else "",
            loc.field("findings", f.id, "ref") or "",
            f.id,
        )
        for f in sorted(findings, key=lambda f: -f.severity)
    ]
    return (
        environment()
        .get_template("mx.html.j2")
        .render(
            loc=loc,
            title=loc.ui("report.title_mx", domain=domain),
            sentence=sentence,
            state=state_of(status),
            tree=views.mx_tree(facts, findings, loc, verdict),
            chart=views.chart(sessions, loc, ""),
            sessions=views.session_views(sessions, loc, ""),
            findings=rows,
            verdicts=views.verdict_rows(verdicts, loc),
        )
    )


class BatchHtml:
    """The batch report, written as the records arrive: a section per target at once, the
    summary (counts, chart, slowest and failing targets) at the end, shown on top by the
    page's style. Memory holds the counts, the slowest few and the failing list's first
    entries, whatever the size of the batch."""

    def __init__(self, loc: Locale) -> None:
        self.loc = loc
        self.env = environment()
        self.section = self.env.get_template("batch_section.html.j2")
        self.done = 0
        self.by_verdict: Counter[str] = Counter()
        self.by_category: Counter[str] = Counter()
        self.slowest: list[tuple[float, int, str]] = []  # a heap of (ms, line, input)
        self.failing: list[tuple[int, str, str]] = []
        self.failing_more = 0

    def start(self) -> str:
        return self.env.get_template("batch_head.html.j2").render(
            loc=self.loc, title=self.loc.ui("report.title_batch")
        )

    def record(self, rec: Mapping[str, Any]) -> str:
        self.done += 1
        line = int(rec.get("line") or 0)
        shown = safe(str(rec.get("input")))
        verdict = "error" if "error" in rec else str(rec.get("verdict"))
        self.by_verdict[verdict] += 1
        for s in rec.get("sessions") or ():
            for st in s.get("steps") or ():
                cat = (st.get("reply") or {}).get("category")
                if isinstance(cat, str) and cat != "success":
                    self.by_category[cat] += 1
        item = (float(rec.get("elapsed_ms") or 0), line, shown)
        if len(self.slowest) < SLOWEST:
            heapq.heappush(self.slowest, item)
        else:
            heapq.heappushpop(self.slowest, item)
        if rec.get("exit_status") != 0:
            if len(self.failing) < FAILING_LISTED:
                self.failing.append((line, shown, self._verdict_word(verdict)))
            else:
                self.failing_more += 1
        return self.section.render(loc=self.loc, **self._section(rec, line, shown))

    def _verdict_word(self, verdict: str) -> str:
        return (
            self.loc.ui("report.input_error")
            if verdict == "error"
            else self.loc.ui(f"verdict.{verdict}")
        )

    def _section(self, rec: Mapping[str, Any], line: int, shown: str) -> dict[str, Any]:
        base = {"anchor": f"t{line}", "input": shown, "line": line}
        err = rec.get("error")
        if isinstance(err, dict):
            detail = safe(f"{err.get('kind')}: {said(self.loc, err)}")
            return {**base, "error": detail, "state": "bad"}
        return {**base, "error": None, **probe_context(rec, self.loc, f"t{line}-")}

    def end(self) -> str:
        loc = self.loc
        failing = sum(n for v, n in self.by_verdict.items() if v != "accepted")
        verdicts = [
            (self._verdict_word(v), n, _verdict_state(v)) for v, n in self.by_verdict.most_common()
        ]
        top = max([n for _, n, _ in verdicts] or [1])
        return self.env.get_template("batch_tail.html.j2").render(
            loc=loc,
            sentence=loc.ui(
                "report.batch_sentence",
                count=self.done,
                failing=failing,
                accepted=self.by_verdict.get("accepted", 0),
            ),
            verdicts=[(w, n, s, round(100 * n / top, 2)) for w, n, s in verdicts],
            categories=[
                (loc.ui(f"category.{c}.title"), n) for c, n in self.by_category.most_common()
            ],
            slowest=sorted(self.slowest, reverse=True),
            failing=self.failing,
            failing_more=self.failing_more,
        )
