"""`--format html|junit|github`: reports of real probes against loopback servers, their
structure read back with html.parser, the JUnit XML with the schema, the workflow commands
with GitHub's escaping rules."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.catalog import locale
from probe.render import github, views
from probe.render.html import FAILING_LISTED, SLOWEST, BatchHtml
from tests.report_lab import SCENARIOS, Dom, El, Lab, invoke, start_lab

XSD = Path(__file__).resolve().parent.parent / "fixtures" / "junit.xsd"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from start_lab(str(tmp_path_factory.mktemp("report")))


def _json(lab: Lab, scenario: str, *extra: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(lab.probe(scenario, "json", *extra)[1])
    return doc


def _self_contained(dom: El) -> None:
    """Nothing is fetched and nothing runs: no script, no external src or href."""
    assert not dom.find("script") and not dom.find("link") and not dom.find("iframe")
    for el in dom.iter():
        for name in ("src", "href", "xlink:href", "action", "data"):
            value = el.attrs.get(name, "").strip().lower()
            assert not value or value.startswith("#"), (el.tag, name, value)
        assert not any(k.startswith("on") for k in el.attrs), el.attrs
    csp = [m for m in dom.find("meta") if m.attrs.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0].attrs["content"]


def _bars(row: El) -> list[El]:
    return row.find("g", "bar")


def _pct(value: str) -> float:
    assert value.endswith("%"), value
    return float(value[:-1])


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_probe_html_draws_every_session_to_scale(lab: Lab, scenario: str) -> None:
    status, html = lab.probe(scenario, "html")
    assert status == SCENARIOS[scenario][2]
    doc = _json(lab, scenario)
    dom = Dom(html).root
    _self_contained(dom)
    verdict = dom.find("p", "verdict")[0]
    assert doc["target"]["input"] in verdict.all_text()
    assert ("ok" if status == 0 else "warn" if status == 75 else "bad") in verdict.classes
    svg = dom.find("svg", "waterfall")
    rows = svg[0].find("g", "row") if svg else []
    assert len(rows) == len(doc["sessions"]) >= 1  # one row per session
    # The JSON comes from another run of the same scenario: same exchanges, other timings.
    # Times are checked against the page's own (each bar's duration is also in its title).
    scale = float(svg[0].attrs["data-scale-ms"])
    totals = [sum(float(b.attrs["data-ms"]) for b in _bars(row)) for row in rows]
    assert scale == pytest.approx(max(*totals, 1.0))  # a floor of 1 ms: no scale of zero
    for row, session in zip(rows, doc["sessions"], strict=True):
        bars = _bars(row)
        assert [b.attrs["data-command"] for b in bars] == [st["command"] for st in session["steps"]]
        assert float(row.attrs["data-total-ms"]) == pytest.approx(
            sum(float(b.attrs["data-ms"]) for b in bars)
        )
        start = 0.0
        for bar, st in zip(bars, session["steps"], strict=True):
            rect = bar.find("rect")[0]
            ms = float(bar.attrs["data-ms"])
            assert f"{ms:.0f} ms" in bar.find("title")[0].all_text().splitlines()[0]
            # In time order: each bar starts where the one before it ended.
            assert float(bar.attrs["data-start-ms"]) == pytest.approx(start)
            assert _pct(rect.attrs["x"]) == pytest.approx(100 * start / scale, abs=0.002)
            # To scale (a bar too short to see is drawn at the minimum width).
            want = min(max(100 * ms / scale, views.MIN_BAR_PCT), 100 - _pct(rect.attrs["x"]))
            assert _pct(rect.attrs["width"]) == pytest.approx(want, abs=0.002)
            klass = f"c{st['reply']['code'] // 100}" if st["reply"] else "cerr"
            assert klass in rect.classes
            code = str(st["reply"]["code"]) if st["reply"] else st["error"]["kind"]
            assert code in bar.all_text()  # the code on (or under) the bar
            tip = bar.find("title")[0].all_text()
            for line in (st["reply"] or {}).get("lines", []):
                assert line in tip  # the reply exactly as received
            start += ms
        # Tap target: every bar links to its step's details.
        for a in row.find("a"):
            assert dom_ids(dom) >= {a.attrs["href"][1:]}
    for li in dom.find("ul", "tree")[0].find("li"):
        own = [c for c in li.children if c.tag == "span" and "badge" in c.classes]
        assert own, li.all_text()[:80]  # a badge on every node


def dom_ids(dom: El) -> set[str]:
    return {e.attrs["id"] for e in dom.iter() if "id" in e.attrs}


def test_reply_details_carry_meaning_fix_and_retry(lab: Lab) -> None:
    dom = Dom(lab.probe("greylisted", "html")[1]).root
    rcpt = [li for li in dom.find("li", "c4") if "RCPT" in li.all_text()]
    assert len(rcpt) == 1
    text = rcpt[0].all_text()
    assert "450 4.2.0 Recipient address rejected: Greylisted" in text
    for label in ("Meaning", "Fix", "Retry"):
        assert label in text
    assert "Yes, after about" in text  # the retry advice, from the catalog
    expectations = dom.find("section", "expectations")[0].all_text()
    assert "rcpt=2xx" in expectations and "NOT met" in expectations


def test_hostile_server_text_is_shown_as_text(lab: Lab) -> None:
    _, html = lab.probe("hostile", "html")
    dom = Dom(html).root
    _self_contained(dom)
    assert not dom.find("img")
    assert all(a.attrs["href"].startswith("#") for a in dom.find("a"))
    assert dom.find("title")[0].all_text() == "SMTP probe of mallory@evil.test"
    replies = "".join(p.all_text() for p in dom.find("pre", "reply"))
    assert "<script>document.title='pwned'</script>" in replies  # as text
    assert "<img src=x onerror=\"document.title='pwned'\">" in replies
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html


def test_tree_badges_say_what_the_session_showed(lab: Lab) -> None:
    def badges(scenario: str) -> dict[str, str]:
        dom = Dom(lab.probe(scenario, "html")[1]).root
        found = {}
        for b in dom.find("span", "badge"):
            state = next(c for c in ("ok", "bad", "warn", "none", "na") if c in b.classes)
            found.setdefault(b.attrs.get("title", "").split(":")[0], state)
        return found

    ok = badges("accepted")
    assert ok["reachable"] == ok["STARTTLS"] == ok["trusted"] == "ok"
    assert ok["PTR"] == ok["DANE"] == ok["MTA-STS"] == "na"  # `probe` does not check them
    assert badges("no_starttls")["STARTTLS"] == "bad"
    assert badges("untrusted")["trusted"] == "bad"
    assert badges("timeout")["reachable"] == "bad"
    dom = Dom(lab.probe("accepted", "html")[1]).root
    nodes = [n.all_text() for n in dom.find("span", "node")]
    assert nodes == ["ok.test", "mx.ok.test", "127.0.1.2", "mx2.ok.test", "127.0.1.2"]


def test_all_sessions_get_a_row_each(lab: Lab) -> None:
    _, html = lab.probe("accepted", "html", "--all")
    doc = _json(lab, "accepted", "--all")
    assert len(doc["sessions"]) == 2
    rows = Dom(html).root.find("g", "row")
    assert [r.find("text")[0].all_text().split(" [")[0] for r in rows] == [
        "mx.ok.test",
        "mx2.ok.test",
    ]


def test_report_speaks_the_users_language(lab: Lab) -> None:
    for lang, heading in (
        ("de", "Ablauf der Sitzungen"),
        ("zh", "会话瀑布图"),
        ("ko", "세션 폭포 차트"),
    ):
        _, html = lab.probe("greylisted", "html", "--lang", lang)
        dom = Dom(html).root
        assert dom.find("html")[0].attrs["lang"] == lang
        assert heading in [h.all_text() for h in dom.find("h2")]


def test_mx_html_findings_by_severity_and_tree(lab: Lab) -> None:
    args = lab.args("mx", "--timeout", "2", "--allow-private", "--cafile", lab.cafile)
    r = invoke(*args, "--format", "html", "ok.test")
    dom = Dom(r.stdout).root
    _self_contained(dom)
    rows = dom.find("table", "findings")[0].find("tr")[1:]
    order = ["error", "warning", "info", "ok"]
    seen = [order.index(tr.attrs["data-severity"]) for tr in rows]
    assert seen == sorted(seen) and len(seen) >= 3
    assert "ptr-missing" in {tr.attrs["data-id"] for tr in rows}
    tree = dom.find("ul", "tree")[0]
    for li in tree.find("li"):
        assert [c for c in li.children if "badge" in c.classes]
    titles = {b.attrs["title"].split(":")[0] for b in tree.find("span", "badge")}
    assert {"reachable", "STARTTLS", "trusted", "PTR", "DANE", "MTA-STS"} <= titles
    assert len(dom.find("g", "row")) == 2  # every MX x address
    assert dom.find("p", "verdict")[0].all_text().startswith("ok.test has")


def _batch(lab: Lab, fmt: str, lines: list[str]) -> tuple[int, str]:
    args = lab.args("batch", "--timeout", "2", "--helo", "probe.example", "--cafile", lab.cafile)
    r = invoke(*args, "--concurrency", "20", "--format", fmt, "-", stdin="\n".join(lines) + "\n")
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    return r.exit_code, r.stdout


BATCH = [f"user{n}@ok.test" for n in range(70)] + [f"user{n}@grey.test" for n in range(20)]
BATCH += [f"user{n}@busy.test" for n in range(9)] + ["not a target"]


@pytest.fixture(scope="module")
def batch_html(lab: Lab) -> str:
    return _batch(lab, "html", BATCH)[1]


def test_batch_html_summary_and_sections(batch_html: str) -> None:
    dom = Dom(batch_html).root
    _self_contained(dom)
    sections = dom.find("section", "target")
    assert len(sections) == 100
    assert {s.attrs["id"] for s in sections} == {f"t{n}" for n in range(1, 101)}
    summary = dom.find("section", "summary")
    assert len(summary) == 1
    counts = {g.find("title")[0].all_text() for g in summary[0].find("g", "count")}
    assert counts == {"accepted: 70", "temporary failure: 29", "Not probed: 1"}
    ids = dom_ids(dom)
    failing = summary[0].find("ul", "failing")[0].find("a")
    assert len(failing) == 30 and all(a.attrs["href"][1:] in ids for a in failing)
    slowest = summary[0].find("ol", "slowest")[0].find("a")
    assert len(slowest) == SLOWEST and all(a.attrs["href"][1:] in ids for a in slowest)
    cats = summary[0].find("table", "categories")[0].all_text()
    assert "Greylisted" in cats
    assert "100 targets probed: 30 failing, 70 accepted." in summary[0].all_text()
    assert len(dom.find("g", "row")) == 99  # a waterfall row for each probed target


def test_batch_html_memory_stays_bounded() -> None:
    """Sections are returned to be written at once; only counts and short lists stay."""
    loc = locale("en")
    report = BatchHtml(loc)
    assert report.start().startswith("<!DOCTYPE html>")
    rec = {"line": 1, "input": "x@y.test", "verdict": "transient", "exit_status": 75}
    for n in range(FAILING_LISTED + 300):
        section = report.record({**rec, "line": n, "elapsed_ms": float(n % 97)})
        assert f'id="t{n}"' in section
    assert len(report.failing) == FAILING_LISTED and report.failing_more == 300
    assert len(report.slowest) == SLOWEST
    tail = report.end()
    assert "and 300 more failing targets not listed" in tail


def _xsd() -> Any:
    lxml = pytest.importorskip("lxml.etree")
    return lxml.XMLSchema(lxml.parse(str(XSD)))


def _valid(xml: str) -> Any:
    from lxml import etree

    doc = etree.fromstring(xml.encode())
    schema = _xsd()
    assert schema.validate(doc), schema.error_log
    return doc


def test_junit_probe_validates_and_carries_the_breaking_reply(lab: Lab) -> None:
    for scenario in SCENARIOS:
        _valid(lab.probe(scenario, "junit")[1])
    doc = _valid(lab.probe("greylisted", "junit")[1])
    suites = doc.findall("testsuite")
    assert len(suites) == 1 and suites[0].get("name") == "bob@grey.test"
    cases = {(c.get("classname"), c.get("name")): c for c in suites[0].findall("testcase")}
    expect = cases[("smtp-probe.expect", "rcpt=2xx")].find("failure")
    assert expect is not None and "450 4.2.0 Recipient address rejected" in expect.get("message")
    assert "Meaning: " in expect.text and "Retry: Yes, after about" in expect.text
    session = cases[("smtp-probe.session", f"mx.grey.test [127.0.1.3]:{lab.smtp_port}")]
    assert session.find("failure") is not None
    assert suites[0].get("tests") == "3" and suites[0].get("failures") == "3"
    ok = _valid(lab.probe("accepted", "junit")[1]).find("testsuite")
    assert (
        ok.get("failures") == "0" and ok.get("tests") == "4"
    )  # verdict, 2 expectations, 1 session


def test_junit_mx_and_batch_validate(lab: Lab) -> None:
    args = lab.args("mx", "--timeout", "2", "--allow-private", "--cafile", lab.cafile)
    doc = _valid(invoke(*args, "--format", "junit", "evil.test").stdout)
    failures = [c for c in doc.iter("testcase") if c.find("failure") is not None]
    assert failures  # STARTTLS missing is an error
    status, xml = _batch(lab, "junit", ["a@ok.test", "b@grey.test", "not a target"])
    batch = _valid(xml)
    assert status == 0
    assert sorted(s.get("name") for s in batch.findall("testsuite")) == [
        "a@ok.test",
        "b@grey.test",
        "not a target",
    ]
    assert [s.get("id") for s in batch.findall("testsuite")] == ["0", "1", "2"]


HOSTILE = "100% broken, see: a\r\nb\n::error::injected"


def test_github_escaping_rules() -> None:
    assert github.escape_data(HOSTILE) == "100%25 broken, see: a%0D%0Ab%0A::error::injected"
    assert github.escape_property(HOSTILE) == (
        "100%25 broken%2C see%3A a%0D%0Ab%0A%3A%3Aerror%3A%3Ainjected"
    )
    line = github.command("error", "t: x, y", HOSTILE)
    assert line.count("\n") == 1 and line.endswith("\n")
    kind, title, data = _parse_command(line)
    assert (kind, title, data) == ("error", "t: x, y", HOSTILE)


def _parse_command(line: str) -> tuple[str, str, str]:
    """Read a workflow command back as the runner does."""
    assert line.startswith("::")
    head, data = line.rstrip("\n")[2:].split("::", 1)
    kind, _, props = head.partition(" ")
    title = props.removeprefix("title=")

    def unescape(s: str) -> str:
        for a, b in (("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%")):
            s = s.replace(a, b)
        return s

    return kind, unescape(title), unescape(data)


def test_github_commands_for_probe_mx_and_batch(lab: Lab) -> None:
    lines = lab.probe("greylisted", "github")[1].splitlines(keepends=True)
    assert len(lines) == 1
    kind, title, data = _parse_command(lines[0])
    assert kind == "error" and title == "smtp-probe: bob@grey.test --expect rcpt=2xx"
    assert "450 4.2.0 Recipient address rejected" in data and "Retry:" in data
    assert _parse_command(lab.probe("accepted", "github")[1])[0] == "notice"
    assert _parse_command(lab.probe("timeout", "github")[1])[0] == "warning"
    hostile = lab.probe("hostile", "github")[1]
    assert hostile.count("\n") == 1  # server text cannot start a command of its own
    kind, title, data = _parse_command(hostile)
    assert "%0A::error::x" in data and "onerror" in data
    args = lab.args("mx", "--timeout", "2", "--allow-private", "--cafile", lab.cafile)
    mx = invoke(*args, "--format", "github", "plain.test").stdout.splitlines()
    assert any(line.startswith("::error title=smtp-probe mx%3A ") for line in mx)
    assert all(line.startswith(("::error ", "::warning ")) for line in mx)
    _, out = _batch(lab, "github", ["a@ok.test", "b@grey.test", "c@busy.test"])
    commands = [_parse_command(line) for line in out.splitlines(keepends=True)]
    assert sorted(c[0] for c in commands) == ["notice", "warning", "warning"]
    assert commands[-1][2] == "3 targets probed: 2 failing, 1 accepted."


def test_resume_needs_json_lines(tmp_path: Path) -> None:
    r = invoke("batch", "--format", "html", "--output", str(tmp_path / "o"), "--resume", "-")
    assert r.exit_code == 64 and "smtp-probe: error: --resume reads JSON Lines" in r.output


SNIPPET = """
import sys
sys.argv = ["smtp-probe", *{args!r}]
try:
    from probe.cli import main
    main()
except SystemExit:
    pass
sys.stderr.write("JINJA:" + str("jinja2" in sys.modules))
"""


@pytest.mark.parametrize("args", [["explain", "550 5.1.1 x"], ["probe", "--help"], ["codes"]])
def test_commands_without_a_report_do_not_load_jinja2(args: list[str]) -> None:
    code = SNIPPET.format(args=args)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.stderr.rsplit("JINJA:", 1)[1] == "False", p.stderr


def test_redacted_and_host_reports_stay_whole(lab: Lab) -> None:
    args = lab.args("probe", "--timeout", "2", "--cafile", lab.cafile, "--format", "html")
    r = invoke(*args, "--redact", "alice@ok.test")
    dom = Dom(r.stdout).root
    _self_contained(dom)
    assert "127.0.1.2" not in r.stdout and "alice@" not in r.stdout
    assert len(dom.find("g", "row")) == 1
    host = Dom(invoke(*args, "--host", "127.0.1.5").stdout).root
    nodes = [n.all_text() for n in host.find("span", "node")]
    assert nodes == ["127.0.1.5", "127.0.1.5", "127.0.1.5"]  # target, host, address
    for li in host.find("ul", "tree")[0].find("li"):
        assert [c for c in li.children if "badge" in c.classes]


def test_mx_report_without_connecting(lab: Lab) -> None:
    args = lab.args("mx", "--timeout", "2", "--allow-private", "--no-connect")
    dom = Dom(invoke(*args, "--format", "html", "grey.test").stdout).root
    _self_contained(dom)
    assert not dom.find("svg", "waterfall")  # no session, no waterfall
    titles = [
        b.attrs["title"].split(":")[0] for b in dom.find("ul", "tree")[0].find("span", "badge")
    ]
    assert "PTR" in titles and "reachable" not in titles


def test_mx_html_has_the_verdict_per_address(lab: Lab) -> None:
    args = lab.args("mx", "--timeout", "2", "--allow-private", "--cafile", lab.cafile)
    doc = json.loads(invoke(*args, "--format", "json", "ok.test").stdout)
    dom = Dom(invoke(*args, "--format", "html", "ok.test").stdout).root
    table = dom.find("table", "verdicts")[0]
    heads = [th.all_text() for th in table.find("th")]
    assert heads == [
        "MX",
        "Address",
        "Opportunistic sender",
        "DANE-enforcing sender",
        "MTA-STS-enforcing sender",
    ]
    rows = table.find("tr")[1:]
    assert [(tr.attrs["data-host"], tr.attrs["data-address"]) for tr in rows] == [
        (a["host"], a["address"]) for a in doc["addresses"]
    ]
    want = {True: "ok", False: "bad", None: "na"}
    for tr, a in zip(rows, doc["addresses"], strict=True):
        cells = tr.find("td", "answer")
        assert len(cells) == 3
        for td, key in zip(
            cells, ("opportunistic", "dane_enforcing", "mta_sts_enforcing"), strict=True
        ):
            assert td.attrs["data-state"] == want[a[key]["delivers"]]
            assert a[key]["reason_text"] in td.all_text()
    de = Dom(invoke(*args, "--format", "html", "--lang", "de", "ok.test").stdout).root
    assert de.find("table", "verdicts")[0].find("th")[2].all_text() == "Opportunistischer Absender"


def test_mx_html_verdicts_are_escaped() -> None:
    from probe.checks import DomainFacts, Records
    from probe.render.html import mx_page
    from probe.result import DnsStatus
    from probe.sender import AddressVerdict, Answer

    evil = '<img src=x onerror="alert(1)">'
    v = AddressVerdict(
        "mx.evil.test",
        "192.0.2.1",
        True,
        False,
        None,
        "none",
        None,
        Answer(True, "plaintext-after-tls-failure", evil),
        Answer(True, "dane-none", "no TLSA records"),
        Answer(None, "not-connected"),
    )
    page = mx_page(DomainFacts("evil.test", Records(DnsStatus.OK)), [], locale("en"), 0, [v])
    assert evil not in page and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page
    row = Dom(page).root.find("table", "verdicts")[0].find("tr")[1]
    assert [td.attrs["data-state"] for td in row.find("td", "answer")] == ["ok", "ok", "na"]
