"""`explain -` over a mail log: streamed record by record in every format, memory flat with
the input's size, the same output as explaining each line in turn, a byte-order mark ignored
(issue 13)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from probe.catalog import locale
from probe.cli import cli
from probe.cli.offline import MAX_LINE
from probe.interpret import interpret_reply
from probe.model import Reply
from probe.render import explain as render
from probe.reply import MAX_REPLY_LINES, iter_replies
from probe.text import to_json
from tests.conftest import FIXTURES, ROOT

ENV = {"NO_COLOR": "1", "LANG": "C", "LC_ALL": "", "LC_MESSAGES": ""}
FORMATS = (["--summary"], ["--summary", "--format", "json"], [], ["--format", "json"])
FORMATS += (["--format", "jsonl"],)

LINES = [
    "Nov 22 09:00:01 mx postfix/smtpd[1]: connect from unknown[198.51.100.{n}]",
    "Nov 22 09:00:02 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[198.51.100.7]: "
    "450 4.7.25 Client host rejected: cannot find your hostname, [198.51.100.7]; "
    "from=<a{n}@example.com> to=<b@example.net> proto=ESMTP helo=<x>",
    "Nov 22 09:00:03 mx postfix/smtp[2]: 4Bc9X: to=<k{n}@example.org>, relay=mx.example.org"
    "[192.0.2.10]:25, dsn=5.1.1, status=bounced (host mx.example.org[192.0.2.10] said: 550 "
    "5.1.1 <k{n}@example.org>: Recipient address rejected: User unknown (in reply to RCPT TO "
    "command))",
    "Nov 22 09:00:04 mx postfix/smtp[2]: 4Bc{n}: to=<u@example.org>, relay=mx.example.org"
    "[192.0.2.10]:25, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as {n})",
    "Nov 22 09:00:05 mx postfix/smtpd[1]: disconnect from host-192-0-250-{n}.example[192.0.2.5]",
    "Nov 22 09:00:06 mx postfix/smtpd[1]: warning: hostname x{n}.example does not resolve",
    "2026-11-22 09:16:01 1vX2aB-000Kx1-3Q ** ops@example.net R=dnslookup T=remote_smtp "
    "H=mx.example.net [192.0.2.20]: SMTP error from remote mail server after RCPT "
    "TO:<ops{n}@example.net>: 550 5.7.1 Relaying denied",
    "Diagnostic-Code: smtp; 554 5.7.1 Service unavailable; Client host [203.0.113.{n}] "
    "blocked using zen.spamhaus.org",
    "=== Connected to 192.0.2.5.",
    "<-  220 mx.example.net ESMTP",
    " -> EHLO client.example.com",
    "<-  250-mx.example.net",
    "<-  250 STARTTLS",
    " -> RCPT TO:<nobody{n}@example.net>",
    "<** 550 5.1.1 No such user",
    "250-one",
    "250 two {n}",
    "\x1b[31m550 5.7.1 evil\x1b[0m \x07 {n}",
]


def sample_log(lines: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(LINES).format(n=n % 300) + "\n" for n in range(lines))


def run(args: list[str], data: str | bytes) -> Any:
    return CliRunner().invoke(cli, ["explain", *args, "-"], input=data, env=ENV)


def one_by_one(log: str, fmt: list[str]) -> str:
    """What explain printed before it streamed: each reply interpreted on its own, a JSON
    array collected whole and dumped at the end."""
    loc = locale("en")
    found = [
        interpret_reply(r, line)
        for line, r in iter_replies(log.splitlines())
        if isinstance(r, Reply)
    ]
    if "--summary" in fmt:
        s = render.Summary()
        for line, r in iter_replies(log.splitlines()):
            s.add(interpret_reply(r, line) if isinstance(r, Reply) else r)
        if "json" in fmt:
            return to_json(render.summary_json(s, loc), indent=2) + "\n"
        return render.summary_text(s, loc) + "\n"
    if fmt == ["--format", "json"]:
        return to_json([render.to_json(i, loc) for i in found], indent=2) + "\n"
    if fmt == ["--format", "jsonl"]:
        return "".join(to_json(render.to_json(i, loc)) + "\n" for i in found)
    return "\n\n".join(render.to_text(i, loc) for i in found) + "\n"


@pytest.mark.parametrize("fmt", FORMATS, ids=" ".join)
def test_output_is_what_explaining_each_reply_in_turn_gives(fmt: list[str]) -> None:
    """Streaming, the quick test before the forms and the run's cache change nothing."""
    log = sample_log(3000)
    with (FIXTURES / "replies.tsv").open(encoding="utf-8") as f:
        log += "".join(line.split("\t", 1)[0] + "\n" for line in f)
    r = run(fmt, log)
    assert r.exit_code == 0, r.output[:500]
    assert r.stdout == one_by_one(log, fmt)


def test_json_array_is_written_as_it_goes() -> None:
    r = run(["--format", "json"], "no reply here\n")
    assert r.stdout == "[]\n" and r.exit_code == 65
    r = run(["--format", "json"], "250 ok\n")
    assert json.loads(r.stdout)[0]["code"] == 250


@pytest.mark.parametrize("fmt", FORMATS, ids=" ".join)
def test_a_byte_order_mark_at_the_start_is_ignored(fmt: list[str]) -> None:
    log = "250-first\n250 second\n" + sample_log(50)
    plain = run(fmt, log.encode())
    marked = run(fmt, b"\xef\xbb\xbf" + log.encode())
    assert marked.exit_code == plain.exit_code == 0
    assert marked.stdout == plain.stdout
    first = run(["--format", "jsonl"], b"\xef\xbb\xbf550 5.1.1 no such user\n")
    doc = json.loads(first.stdout)
    assert doc["input"] == "550 5.1.1 no such user" and doc["form"] == "reply"


def test_an_over_long_line_is_read_to_the_limit_and_the_next_line_is_kept() -> None:
    data = b"550 5.1.1 " + b"x" * (3 * MAX_LINE) + b"\n451 4.3.0 later\n"
    r = run(["--format", "jsonl"], data)
    docs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [d["code"] for d in docs] == [550, 451]
    assert len(docs[0]["input"]) == MAX_LINE and docs[1]["input"] == "451 4.3.0 later"


def test_an_endless_reply_comes_out_in_bounded_pieces() -> None:
    lines = ["250-more"] * (3 * MAX_REPLY_LINES) + ["250 end"]
    out = list(iter_replies(lines))
    assert len(out) == 3 and all(isinstance(r, Reply) for _, r in out)
    assert max(len(r.lines) for _, r in out if isinstance(r, Reply)) <= MAX_REPLY_LINES + 1


def _peak_kb(args: list[str], log: Path) -> int:
    """Peak resident memory (KB) of `smtp-probe explain ARGS -` reading `log`."""
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
    with log.open("rb") as stdin:
        p = subprocess.Popen(
            [sys.executable, "-m", "probe", "explain", *args, "-"],
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    assert p.returncode == 0, args
    return usage.ru_maxrss


@pytest.mark.parametrize("fmt", FORMATS, ids=" ".join)
def test_memory_is_flat_with_the_size_of_the_log(fmt: list[str], tmp_path: Path) -> None:
    small, large = tmp_path / "small.log", tmp_path / "large.log"
    small.write_text(sample_log(5_000))
    large.write_text(sample_log(50_000, seed=2))
    assert _peak_kb(fmt, large) < 1.3 * _peak_kb(fmt, small)


def test_memory_is_flat_with_the_length_of_a_line(tmp_path: Path) -> None:
    short, endless = tmp_path / "short.log", tmp_path / "endless.log"
    short.write_bytes(b"550 5.1.1 " + b"x" * 1000 + b"\n")
    endless.write_bytes(b"550 5.1.1 " + b"x" * (64 * 1024 * 1024) + b"\n")
    assert _peak_kb(["--format", "json"], endless) < 1.3 * _peak_kb(["--format", "json"], short)


def test_a_summary_counts_past_a_thousand_codes_together() -> None:
    log = "".join(f"550 5.{n // 1000}.{n % 1000} x\n" for n in range(1500))
    doc = json.loads(run(["--summary", "--format", "json"], log).stdout)
    codes = {c["code"]: c["count"] for c in doc["by_code"]}
    assert len(codes) == 1001 and codes["other"] == 500
    assert sum(codes.values()) == doc["replies"] == 1500
    text = run(["--summary"], log).stdout
    assert "Other codes (past the first 1000)" in text
