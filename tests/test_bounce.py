"""Bounce emails: RFC 3464 reports and MTA text bounces become one item per recipient."""

from __future__ import annotations

import json
import random
import re
import time
from typing import Any

import pytest
from click.testing import CliRunner

from probe import bounce, pasted
from probe.bounce import explain_email, read_email
from probe.cli import cli
from probe.interpret import explain
from tests.conftest import FIXTURES, valid

BOUNCES = FIXTURES / "bounces"
ENV = {"NO_COLOR": "1", "LANG": "C", "LC_ALL": "", "LC_MESSAGES": ""}


def run(*args: str, input: bytes | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), input=input, env=ENV)


def items(name: str) -> list[tuple[str | None, int | None, str | None, str]]:
    out = []
    for i in explain_email((BOUNCES / name).read_bytes()):
        enh = str(i.reply.enhanced) if i.reply.enhanced else None
        out.append((i.recipient, i.reply.code, enh, i.category))
    return out


def test_rfc3464_two_recipients_with_folded_diagnostic() -> None:
    got = explain_email((BOUNCES / "dsn-two-recipients.eml").read_bytes())
    assert [(i.recipient, i.reply.code, str(i.reply.enhanced), i.category) for i in got] == [
        ("bob@example.org", 550, "5.1.1", "user_unknown"),
        ("carol@example.org", 452, "4.2.2", "mailbox_full"),
    ]
    # The folded Diagnostic-Code is one reply text, continuation prefixes removed.
    assert got[0].reply.text == (
        "The mailbox bob@example.org is not known here; please check the address and try again"
    )
    assert got[1].retryable and not got[0].retryable


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("quoted-printable.eml", [("dave@example.org", 554, "5.7.1", "blocklisted")]),
        ("base64.eml", [("erin@example.org", 550, "5.1.1", "user_unknown")]),
        ("m365.eml", [("frank@contoso.example", 550, "5.1.10", "user_unknown")]),
        ("gmail.eml", [("grace@example.org", 550, "5.1.1", "user_unknown")]),
        ("cr-only.eml", [("heidi@nowhere.example", 550, "5.1.2", "dns")]),
    ],
)
def test_each_form_gives_its_recipient(name: str, want: list[tuple[object, ...]]) -> None:
    assert items(name) == want


def test_quoted_printable_is_decoded() -> None:
    (f,) = read_email((BOUNCES / "quoted-printable.eml").read_bytes())
    assert "block list — see" in f.reply.text and "=E2" not in f.reply.text


def test_gmail_reply_runs_over_its_lines() -> None:
    (f,) = read_email((BOUNCES / "gmail.eml").read_bytes())
    assert f.reply.text.endswith("for typos or unnecessary spaces.")


@pytest.mark.parametrize("end", [b"\r\n", b"\n", b"\r"])
def test_line_ends_read_alike(end: bytes) -> None:
    for name in ("dsn-two-recipients.eml", "gmail.eml", "cr-only.eml"):
        data = (BOUNCES / name).read_bytes()
        lf = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        assert explain_email(lf.replace(b"\n", end)) == explain_email(lf), (name, end)


def test_codeless_bounce_is_read_by_its_words() -> None:
    data = (
        b"From: MAILER-DAEMON@relay.example.net\nSubject: Mail delivery failed\n\n"
        b"The following address failed:\n\n  ivan@example.org\n    retry timeout exceeded\n"
    )
    (i,) = explain_email(data)
    assert (i.recipient, str(i.reply.enhanced), i.category) == (
        "ivan@example.org",
        "4.4.7",
        "expired",
    )
    assert i.reply.form == "bounce_text" and i.reply.code is None


def test_not_a_bounce_gives_nothing() -> None:
    assert explain_email(b"From: a@example.org\nSubject: hi\n\nSee you at 10.\n") == []
    assert explain_email(b"") == []


def test_the_original_message_is_not_read() -> None:
    data = (BOUNCES / "base64.eml").read_bytes() + b""
    quoted = (
        b"From: x@example.net\nSubject: failed\n\n  judy@example.org\n    550 5.1.1 gone\n\n"
        b"------ This is a copy of the message ------\n\nReceived: by a\n"
        b"Subject: 554 5.7.1 <mallory@example.org> quoted text\n"
    )
    assert [i.recipient for i in explain_email(quoted)] == ["judy@example.org"]
    assert explain_email(data)


# ----------------------------------------------------------------- the command line


def test_cli_email_text_names_the_recipient() -> None:
    r = run("explain", "--email", str(BOUNCES / "dsn-two-recipients.eml"))
    assert r.exit_code == 0, r.output
    blocks = r.stdout.split("\n\n")
    assert len(blocks) == 2
    assert re.search(r"^  Recipient +bob@example\.org$", blocks[0], re.M)
    assert re.search(r"^  Recipient +carol@example\.org$", blocks[1], re.M)


def test_cli_email_json_valid_per_recipient() -> None:
    r = run("explain", "--format", "json", "--email", str(BOUNCES / "dsn-two-recipients.eml"))
    assert r.exit_code == 0, r.output
    doc = valid(json.loads(r.stdout), "explain")
    assert [d["recipient"] for d in doc] == ["bob@example.org", "carol@example.org"]
    assert [d["enhanced"] for d in doc] == ["5.1.1", "4.2.2"]
    assert all(d["found"] for d in doc)


def test_cli_email_from_stdin_and_jsonl() -> None:
    data = (BOUNCES / "cr-only.eml").read_bytes()
    r = run("explain", "--format", "jsonl", "--email", "-", input=data)
    assert r.exit_code == 0, r.output
    (d,) = [valid(json.loads(line), "explain") for line in r.stdout.splitlines()]
    assert (d["recipient"], d["category"], d["rule"]["id"]) == (
        "heidi@nowhere.example",
        "dns",
        "generic-host-unknown",
    )


def test_cli_email_german() -> None:
    r = run("explain", "--lang", "de", "--email", str(BOUNCES / "cr-only.eml"))
    assert r.exit_code == 0, r.output
    assert "Empfänger" in r.stdout and "heidi@nowhere.example" in r.stdout
    assert "Die Domain oder der Mailserver des Empfängers wurde nicht gefunden" in r.stdout
    assert "could not be found" not in r.stdout


def test_cli_email_errors() -> None:
    r = run("explain", "--email", str(BOUNCES / "missing.eml"))
    assert r.exit_code == 66
    assert r.stderr.startswith("smtp-probe: error: cannot read") and "Traceback" not in r.output
    r = run("explain", "--email", "-", input=b"Subject: hello\n\nnothing here\n")
    assert r.exit_code == 65 and "no SMTP reply" in r.stderr
    r = run("explain")
    assert r.exit_code == 64 and "--email" in r.stderr


# ----------------------------------------------------------------- text beats code


@pytest.mark.parametrize(
    ("item", "category"),
    [
        ("550 Host unknown", "dns"),
        ("550 5.1.2 <a@nowhere.example>... Host unknown (Name server: host not found)", "dns"),
        ("550", "other"),
        ("550 Requested action not taken", "other"),
        ("550 5.1.1 <a@example.org>: Recipient address rejected: User unknown", "user_unknown"),
        ("550 No such user here", "user_unknown"),
    ],
)
def test_text_beats_code(item: str, category: str) -> None:
    e = explain(item)
    assert not isinstance(e, tuple.__class__) and getattr(e, "category", None) == category


# ----------------------------------------------------------------- robustness


def _mutations(seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    for path in sorted(BOUNCES.glob("*.eml")):
        data = bytearray(path.read_bytes())
        for _ in range(20):
            d = bytearray(data)
            for _ in range(rnd.randint(1, 30)):
                op, pos = rnd.random(), rnd.randrange(len(d) or 1)
                if op < 0.4:
                    d[pos : pos + 1] = bytes([rnd.randrange(256)])
                elif op < 0.7:
                    del d[pos : pos + rnd.randint(1, 200)]
                else:
                    d[pos:pos] = rnd.choice(
                        [b"\r", b"\n--b1\n", b": ", b"=\n", b"\x00", b"\xff\xfe"]
                    )
            out.append(bytes(d))
    return out


def test_mutated_emails_never_crash() -> None:
    for data in _mutations(14):
        for i in explain_email(data):
            assert i.reply.code is not None or i.reply.enhanced is not None


def test_mutated_emails_never_crash_the_command() -> None:
    for data in _mutations(3)[::7]:
        r = run("explain", "--format", "json", "--email", "-", input=data)
        assert r.exit_code in (0, 65), r.output
        if r.exit_code == 0:
            valid(json.loads(r.stdout), "explain")


def _patterns() -> list[re.Pattern[str]]:
    found = [v for m in (bounce, pasted) for v in vars(m).values() if isinstance(v, re.Pattern)]
    return found + [p for p, _ in bounce._WORDS]


ADVERSARIAL = [
    "a" * 65536,
    "a@" * 32768,
    "a." * 32768,
    "a@a." * 16384,
    " " * 65536,
    "\t \n" * 21845,
    "<" * 65536,
    "<br" * 21845,
    "550 " * 16384,
    "5.1." * 16384,
    "From:<" * 10922,
    "Remote Server returned '" * 2730,
    "stat=" * 13107,
    "-" * 65536,
]


def test_patterns_run_in_linear_time() -> None:
    """Each pattern of these modules on 64 KB of hostile input, well within 50 ms of CPU."""
    for pattern in _patterns():
        for text in ADVERSARIAL:
            t0 = time.process_time()
            pattern.search(text)
            pattern.match(text)
            spent = time.process_time() - t0
            assert spent < 0.05, (pattern.pattern[:60], text[:12], spent)


def test_cost_per_email_is_small() -> None:
    """Reading and interpreting one bounce costs well under 10 ms (CPU, after warm-up)."""
    data = [p.read_bytes() for p in sorted(BOUNCES.glob("*.eml"))]
    explain_email(data[0])
    t0 = time.process_time()
    for _ in range(5):
        for d in data:
            explain_email(d)
    assert (time.process_time() - t0) / (5 * len(data)) < 0.01
