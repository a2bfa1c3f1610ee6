"""The report formats (`--format html|junit|github`) of `probe`, `mx` and `batch`.

The renderers are pure (probe.render.html, junit, github); this module picks one. A batch
writes its format as the records arrive: a start, one chunk per record, an end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from probe.catalog import Locale
from probe.checks import DomainFacts, Finding, Severity
from probe.result import ProbeResult
from probe.sender import AddressVerdict
from probe.text import to_json

REPORTS = ("html", "junit", "github")


class RecordFormat(Protocol):
    def start(self) -> str: ...
    def record(self, rec: Mapping[str, Any]) -> str: ...
    def end(self) -> str: ...


class JsonLines:
    """The batch's own format: one JSON record a line."""

    def start(self) -> str:
        return ""

    def record(self, rec: Mapping[str, Any]) -> str:
        return to_json(rec) + "\n"

    def end(self) -> str:
        return ""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def probe_report(fmt: str, result: ProbeResult, loc: Locale) -> str:
    """The report, without its last newline (echo adds one)."""
    return _probe_report(fmt, result, loc).rstrip("\n")


def _probe_report(fmt: str, result: ProbeResult, loc: Locale) -> str:
    if fmt == "html":
        from probe.render.html import probe_page

        return probe_page(result, loc)
    if fmt == "junit":
        from probe.render.junit import probe_junit

        return probe_junit(result, loc)
    from probe.render.github import probe_github

    return probe_github(result, loc)


def mx_report(
    fmt: str,
    facts: DomainFacts,
    findings: Sequence[Finding],
    loc: Locale,
    status: int,
    fail_on: str,
    verdicts: Sequence[AddressVerdict] = (),
) -> str:
    """The report, without its last newline (echo adds one)."""
    return _mx_report(fmt, facts, findings, loc, status, fail_on, verdicts).rstrip("\n")


def _mx_report(
    fmt: str,
    facts: DomainFacts,
    findings: Sequence[Finding],
    loc: Locale,
    status: int,
    fail_on: str,
    verdicts: Sequence[AddressVerdict] = (),
) -> str:
    if fmt == "html":
        from probe.render.html import mx_page

        return mx_page(facts, findings, loc, status, verdicts)
    if fmt == "junit":
        from probe.render.junit import mx_junit

        threshold = Severity.WARNING if fail_on == "warning" else Severity.ERROR
        return mx_junit(facts, findings, loc, threshold, _now())
    from probe.render.github import mx_github

    return mx_github(facts, findings, loc)


def batch_format(fmt: str, loc: Locale) -> RecordFormat:
    if fmt == "html":
        from probe.render.html import BatchHtml

        return BatchHtml(loc)
    if fmt == "junit":
        from probe.render.junit import BatchJunit

        return BatchJunit(loc, _now())
    if fmt == "github":
        from probe.render.github import BatchGithub

        return BatchGithub(loc)
    return JsonLines()
