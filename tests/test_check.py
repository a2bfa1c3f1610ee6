"""`smtp-probe check`: the Nagios/Icinga plugin: threshold ranges in plugin syntax, the status
line with perfdata, a line per MX, exit statuses 0-3, and UNKNOWN for bad arguments."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from probe.cli import cli
from probe.nagios import parse_range
from tests.test_serve import Lab, running_lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The servers and zone of the exporter's tests."""
    yield from running_lab(tmp_path_factory)


@pytest.mark.parametrize(
    ("text", "alert", "quiet"),
    [
        ("10", [-1, 10.5, 11], [0, 5, 10]),
        ("10:", [9.9, -5], [10, 11, 1e9]),
        ("~:10", [10.1, 100], [-1e9, 0, 10]),
        ("10:20", [9, 21], [10, 15, 20]),
        ("@10:20", [10, 15, 20], [9, 21]),
        ("0", [0.001], [0]),
    ],
)
def test_threshold_ranges_follow_the_plugin_guidelines(
    text: str, alert: list[float], quiet: list[float]
) -> None:
    r = parse_range(text)
    assert [v for v in alert if not r.alerts(v)] == []
    assert [v for v in quiet if r.alerts(v)] == []


def test_a_bare_number_of_days_is_a_minimum() -> None:
    r = parse_range("30", bare_is_minimum=True)
    assert (r.start, r.end, r.text) == (30, math.inf, "30:")
    assert r.alerts(29) and not r.alerts(31)
    assert parse_range("@0:30", bare_is_minimum=True).alerts(10)


@pytest.mark.parametrize("text", ["", "abc", "20:10", "1:2:3", "@", "10::"])
def test_bad_ranges(text: str) -> None:
    with pytest.raises(ValueError):
        parse_range(text)


def run(lab: Lab, *args: str) -> tuple[int, list[str]]:
    base = ["check", "--nameserver", f"127.0.0.1:{lab.dns_port}", "--port", str(lab.port)]
    r = CliRunner().invoke(cli, [*base, "--timeout", "2", "--cafile", lab.cafile, *args])
    return r.exit_code, r.output.rstrip("\n").split("\n")


def test_ok_with_perfdata_and_a_line_per_mx(lab: Lab) -> None:
    status, lines = run(lab, "ok.test")
    assert status == 0, lines
    head, perf = lines[0].split(" | ")
    assert head.startswith("SMTP OK - mx.ok.test answered 220 in ")
    assert perf.startswith("time=") and " greeting=" in perf and " starttls=" in perf
    assert " cert_days=" in perf
    assert lines[1].startswith(f"\\_[OK] mx.ok.test [127.0.0.2]:{lab.port}: answered 220 in ")
    assert "TLSv1.3 trusted" in lines[1]
    status, lines = run(lab, "two.test", "--all")
    assert status == 0 and len(lines) == 3
    assert lines[2].startswith("\\_[OK] mx.plain.test [127.0.0.6]")


def test_thresholds_raise_the_state(lab: Lab) -> None:
    status, lines = run(lab, "ok.test", "--warning-days", "1000000")
    assert status == 1 and lines[0].startswith("SMTP WARNING - ")
    assert "cert days outside 1000000:" in lines[0]
    assert "cert_days=" in lines[0] and ";1000000:;" in lines[0]
    status, lines = run(lab, "ok.test", "--warning-days", "30", "--critical-days", "@0:1000000")
    assert status == 2 and lines[0].startswith("SMTP CRITICAL - ")
    status, lines = run(lab, "ok.test", "--critical-time", "0")
    assert status == 2 and "time outside 0" in lines[0] and "time=" in lines[0]
    status, _ = run(lab, "ok.test", "--warning-time", "60", "--critical-time", "120")
    assert status == 0


@pytest.mark.parametrize(
    ("target", "extra", "status", "words"),
    [
        ("grey.test", ["--rcpt", "someone@grey.test"], 1, "answered with a 4xx reply"),
        ("busy.test", [], 1, "throttled"),
        ("null.test", [], 2, "null MX"),
        ("slow.test", ["--timeout", "0.5"], 2, "SMTP CRITICAL"),
        ("untrusted.test", ["--expect", "tls-trusted"], 1, "tls-trusted not met"),
    ],
)
def test_states(lab: Lab, target: str, extra: list[str], status: int, words: str) -> None:
    got, lines = run(lab, target, *extra)
    assert got == status, lines
    assert words in lines[0]
    assert lines[0].startswith(f"SMTP {('OK', 'WARNING', 'CRITICAL')[status]} - ")


@pytest.mark.parametrize(
    "args",
    [
        ["ok.test", "--warning-time", "abc"],
        ["ok.test", "--bogus"],
        ["ok.test", "-4", "-6"],
        ["not a domain"],
        ["ok.test", "--helo", "a\nb"],
        [],
    ],
)
def test_bad_arguments_are_unknown_with_one_line(args: list[str]) -> Any:
    r = CliRunner().invoke(cli, ["check", *args])
    assert r.exit_code == 3, r.output
    lines = r.stdout.rstrip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("SMTP UNKNOWN - "), r.output
