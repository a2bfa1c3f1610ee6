"""`explain`, `compare` and `codes` from the command line, in-process and as real processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from probe.cli import cli
from tests.conftest import valid, valid_lines

ENV = {"NO_COLOR": "1", "LANG": "C", "LC_ALL": "", "LC_MESSAGES": ""}
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
KEYS = {
    "input",
    "code",
    "enhanced",
    "class",
    "category",
    "retryable",
    "description",
    "when",
    "fix",
    "rule",
}


def run(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), input=input, env={**ENV, **(env or {})})


def test_explain_text() -> None:
    r = run("explain", "550 5.1.1 <kim@example.org>: Recipient address rejected: User unknown")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert out.startswith("550 5.1.1 <kim@example.org>")
    for heading in (
        "Class",
        "Category",
        "What it means",
        "When you see it",
        "How to fix it",
        "Retry",
        "Decided by",
    ):
        assert heading in out
    assert "5xx Permanent Negative" in out and "user_unknown" in out


def test_explain_json_every_form() -> None:
    items = [
        "421",
        "5.7.26",
        "550-5.1.1 first line 550-5.1.1 second line 550 5.1.1 last - gsmtp",
        "host mx.example.org[192.0.2.1] said: 452 4.2.2 Mailbox full (in reply to RCPT TO command)",
        "SMTP error from remote mail server after RCPT TO:<a@example.org>: 550 Unrouteable address",
        "Diagnostic-Code: smtp; 554 5.7.1 Service unavailable",
        "<** 530 5.7.0 Must issue a STARTTLS command first",
    ]
    r = run("explain", "--format", "json", *items)
    assert r.exit_code == 0, r.output
    doc = valid(json.loads(r.stdout), "explain")
    assert len(doc) == len(items)
    for obj, item in zip(doc, items, strict=True):
        assert set(obj) >= KEYS
        assert obj["input"] == item
        assert isinstance(obj["retryable"], bool)
        assert obj["rule"]["id"] and obj["rule"]["source"]
    assert doc[0]["code"] == 421 and doc[0]["enhanced"] is None and doc[0]["class"] == 4
    assert doc[1]["code"] is None and doc[1]["enhanced"] == "5.7.26"
    assert doc[3]["command"] == "RCPT" and doc[3]["category"] == "mailbox_full"
    assert doc[6]["category"] == "tls_required"


def test_jsonl_and_not_a_reply_exit_65() -> None:
    r = run("explain", "--format", "jsonl", "250 ok", "no reply here")
    assert r.exit_code == 65
    lines = valid_lines(r.stdout, "explain")
    assert [x["code"] for x in lines] == [250, None]
    assert lines[1]["category"] is None and lines[1]["retryable"] is False
    assert set(lines[1]) >= KEYS


@pytest.mark.parametrize(("item", "status"), [("299", 0), ("999", 65), ("0", 65), ("", 65)])
def test_unknown_codes(item: str, status: int) -> None:
    r = run("explain", item)
    assert r.exit_code == status, r.output
    assert "Traceback" not in r.output


def test_unknown_code_is_flagged() -> None:
    doc = valid(json.loads(run("explain", "--format", "json", "299").stdout), "explain")[0]
    assert doc["class"] == 2 and any(f["id"] == "unknown_code" for f in doc["flags"])


def test_consistency_flags() -> None:
    doc = valid(
        json.loads(
            run(
                "explain",
                "--format",
                "json",
                "550 4.4.7 Message expired",
                "550 5.9.99 x",
                "250 5.1.1 odd",
            ).stdout
        ),
        "explain",
    )
    assert "class_mismatch" in {f["id"] for f in doc[0]["flags"]}
    assert "unregistered" in {f["id"] for f in doc[1]["flags"]}
    assert "class_mismatch" in {f["id"] for f in doc[2]["flags"]}
    assert doc[0]["retryable"] is False  # the basic code decides the protocol action


def test_usage_errors() -> None:
    for args in (
        ["explain"],
        ["explain", "--lang", "fr", "550"],
        ["compare", "550"],
        ["compare", "hello", "550"],
        ["codes", "--category", "nope"],
        ["explain", "--summary", "550"],
    ):
        r = run(*args)
        assert r.exit_code == 64, (args, r.output)
        assert "Traceback" not in r.output


LOG = """Nov 22 09:00:01 mx postfix/smtpd[1]: connect from unknown[198.51.100.7]
Nov 22 09:00:02 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[198.51.100.7]: 450 4.7.25 Client host rejected: cannot find your hostname, [198.51.100.7]; from=<a@example.com> to=<b@example.net> proto=ESMTP helo=<x>
Nov 22 09:00:03 mx postfix/smtp[2]: 4Bc9X: to=<kim@example.org>, relay=mx.example.org[192.0.2.10]:25, dsn=5.1.1, status=bounced (host mx.example.org[192.0.2.10] said: 550 5.1.1 <kim@example.org>: Recipient address rejected: User unknown (in reply to RCPT TO command))
Nov 22 09:00:04 mx postfix/smtp[2]: 4Bc9Y: to=<lee@example.org>, relay=mx.example.org[192.0.2.10]:25, dsn=5.1.1, status=bounced (host mx.example.org[192.0.2.10] said: 550 5.1.1 <lee@example.org>: Recipient address rejected: User unknown (in reply to RCPT TO command))
Nov 22 09:00:05 mx postfix/smtpd[1]: disconnect from unknown[198.51.100.7]
"""


def test_stdin_stream_and_summary() -> None:
    r = run("explain", "--format", "jsonl", "-", input=LOG)
    assert r.exit_code == 0, r.output
    objs = valid_lines(r.stdout, "explain")
    assert [o["code"] for o in objs] == [450, 550, 550]
    s = run("explain", "--summary", "--format", "json", "-", input=LOG)
    doc = valid(json.loads(s.stdout))
    assert doc["lines"] == 5 and doc["replies"] == 3 and doc["not_replies"] == 2
    cats = {c["category"]: c["count"] for c in doc["by_category"]}
    assert cats["user_unknown"] == 2
    assert {c["code"]: c["count"] for c in doc["by_code"]} == {"550 5.1.1": 2, "450 4.7.25": 1}
    t = run("explain", "--summary", "-", input=LOG)
    assert "By category" in t.stdout and "Example:" in t.stdout


def test_hostile_stdin_is_escaped() -> None:
    data = (
        b"550 5.7.1 evil \x1b[31mred\x1b[0m \x07bell \x00nul \xff\xfe bytes\n"
        b"\x1b]0;title\x07 nothing here\n"
        b"451 4.3.0 " + b"A" * (1024 * 1024) + b"\n"
    )
    r = run("explain", "-", input=data)
    assert r.exit_code == 0, r.output[:500]
    assert not RAW_CONTROL.search(r.stdout)
    assert "\\x1b[31mred" in r.stdout and "\\x00nul" in r.stdout and "\\xff\\xfe" in r.stdout
    j = run("explain", "--format", "json", "-", input=data)
    doc = valid(json.loads(j.stdout), "explain")
    assert len(doc) == 2 and doc[1]["code"] == 451


def test_empty_stdin() -> None:
    r = run("explain", "-", input=b"")
    assert r.exit_code == 65
    assert "no SMTP reply" in r.stderr
    assert "Traceback" not in r.output


def test_compare_sentences() -> None:
    r = run("compare", "421", "521")
    assert r.exit_code == 0, r.output
    assert (
        "421 is a 4xx Transient Negative response, while 521 is a 5xx Permanent Negative response."
        in r.stdout
    )
    for heading in (
        "Key differences",
        "What to do",
        "What it means",
        "When you see it",
        "How to fix it",
    ):
        assert heading in r.stdout
    same = run("compare", "421", "451")
    assert "Both 421 and 451 belong to the 4xx Transient Negative category." in same.stdout
    enh = run("compare", "--format", "json", "5.1.1", "4.2.2")
    doc = valid(json.loads(enh.stdout))
    assert doc["schema"] == "smtp-probe/compare/2"
    assert doc["a"]["enhanced"] == "5.1.1" and doc["b"]["enhanced"] == "4.2.2"
    assert doc["differences"][0].startswith("5.1.1 is a 5.X.X")


def test_codes_filters() -> None:
    r = run("codes", "--class", "4", "--format", "json")
    items = valid(json.loads(r.stdout), "codes")
    assert items and all(i["code"].startswith("4") for i in items)
    assert {"421", "450", "451", "452"} <= {i["code"] for i in items}
    cat = valid(
        json.loads(
            run("codes", "--kind", "all", "--category", "greylisted", "--format", "json").stdout
        ),
        "codes",
    )
    assert cat and all(i["category"] == "greylisted" for i in cat)
    assert any(i["kind"] == "rule" for i in cat)
    enh = valid(json.loads(run("codes", "--kind", "enhanced", "--format", "json").stdout), "codes")
    assert len(enh) == 81


@pytest.mark.parametrize(
    ("env", "lang"),
    [
        ({"LANG": "de_DE.UTF-8"}, "de"),
        ({"LC_ALL": "zh_CN.UTF-8"}, "zh"),
        ({"LANG": "ko_KR.UTF-8"}, "ko"),
    ],
)
def test_language_from_environment(env: dict[str, str], lang: str) -> None:
    from probe.catalog import locale

    r = run("explain", "421", env=env)
    loc = locale(lang)
    for key in ("heading.retry", "heading.fix", "class.4"):
        word = loc.ui(key)
        assert word != locale("en").ui(key)
        assert word in r.stdout, (key, r.stdout)
    assert loc.field("basic", "421", "description") in r.stdout.replace("\n", "")


def test_colour_only_when_asked() -> None:
    plain = run("explain", "550")
    assert "\x1b[" not in plain.stdout
    forced = run("explain", "550", env={"FORCE_COLOR": "1", "NO_COLOR": ""})
    assert "\x1b[31m" in forced.stdout or "\x1b[1m" in forced.stdout


def test_real_process_pipe() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "probe", "explain", "-"],
        input=LOG.encode() + b"\xff\x00\x1b[2J\n",
        capture_output=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert out.count("Decided by") == 3
    assert not RAW_CONTROL.search(out)
    assert p.stderr == b""


def _process(*args: str, encoding: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "NO_COLOR": "1", "PYTHONIOENCODING": encoding}
    return subprocess.run(
        [sys.executable, "-m", "probe", *args], capture_output=True, timeout=60, env=env
    )


def test_an_output_encoding_that_cannot_hold_the_language() -> None:
    """Korean to a latin-1 terminal: \\u escapes (JSON's own), not a traceback."""
    utf8 = _process("explain", "421", "--lang", "ko", encoding="utf-8")
    latin = _process("explain", "421", "--lang", "ko", encoding="latin-1")
    assert latin.returncode == 0 and latin.stderr == b"", latin.stderr[-500:]
    shown = latin.stdout.decode("latin-1")
    assert (
        "\\u" in shown and shown.encode("latin-1").decode("unicode_escape") == utf8.stdout.decode()
    )
    as_json = _process("explain", "421", "--lang", "ko", "--format", "json", encoding="latin-1")
    same = _process("explain", "421", "--lang", "ko", "--format", "json", encoding="utf-8")
    text = as_json.stdout.decode("latin-1")  # (what latin-1 holds, such as §, is written as it is)
    assert as_json.returncode == 0 and json.loads(text) == json.loads(same.stdout)
