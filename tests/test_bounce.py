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


# ----------------------------------------------------------------- more general forms


def test_qmail_status_after_its_words() -> None:
    """qmail's "<addr>:" blocks with "(#5.1.1)": written statuses, the copy below not read."""
    got = items("qmail.eml")
    assert got == [
        ("zoe@example.org", None, "5.1.1", "user_unknown"),
        ("yann@gone.example", None, "5.1.2", "dns"),
    ]
    assert all(i.reply.form == "dsn" for i in explain_email((BOUNCES / "qmail.eml").read_bytes()))


def test_failed_recipients_header_alone_is_a_permanent_failure() -> None:
    """Exim names the address in X-Failed-Recipients; with no telling words the status is 5.0.0."""
    (i,) = explain_email((BOUNCES / "exim-header-only.eml").read_bytes())
    assert (i.recipient, str(i.reply.enhanced), i.reply_class) == ("uma@example.org", "5.0.0", 5)
    assert i.reply.form == "bounce_text"


def test_failed_recipients_header_with_a_localised_text() -> None:
    """A group bounce in another language: the header names the address, the help link the reason."""
    (i,) = explain_email((BOUNCES / "groups-localised.eml").read_bytes())
    assert (i.recipient, str(i.reply.enhanced), i.category) == (
        "club@groups.example.net",
        "5.7.1",
        "policy",
    )


def test_words_before_the_address_they_are_about() -> None:
    """A "has been delayed:" sentence names its recipient on the lines below."""
    (i,) = explain_email((BOUNCES / "delayed.eml").read_bytes())
    assert (i.recipient, str(i.reply.enhanced), i.category) == (
        "victor@example.org",
        "4.4.7",
        "expired",
    )
    assert i.retryable


@pytest.mark.parametrize(
    ("line", "enhanced"),
    [
        ("all hosts have been failing for a long time and were last tried", "4.4.7"),
        ("Delivery was aborted after 5.0 hour(s)", "4.4.7"),
        ("Name service error for domain example.org: Host not found, try again", "4.4.3"),
        ("Sorry, I couldn't find any host named gone.example.", "5.1.2"),
        ("User someone (x@example.org) not listed in the directory", "5.1.1"),
        ("This user doesn't have a example.org account", "5.1.1"),
        ("Error: No valid recipients for this message", "5.1.1"),
        ("Sorry, you are sending from an address that has been blacklisted", "5.7.1"),
        ("Insecure Mail Relay", "5.7.1"),
        ("service permits 2 unverifyable sending IPs", "5.7.25"),
        ("Remote server does not support TLS", "5.7.10"),
        ("Network error on destination MXs", "4.4.1"),
        ("malformed address: <x@example.org> may not follow it", "5.1.3"),
    ],
)
def test_more_codeless_wordings(line: str, enhanced: str) -> None:
    data = f"Subject: failed\n\n  kim@example.org\n    {line}\n".encode()
    (i,) = explain_email(data)
    assert (i.recipient, str(i.reply.enhanced)) == ("kim@example.org", enhanced)


@pytest.mark.parametrize(
    ("reply", "category"),
    [
        ("550 5.7.1 service permits 2 unverifyable sending IPs", "dns"),
        ("550 5.7.1 domain [example.com] mismatches client ip 192.0.2.1", "dns"),
        ("550 5.0.0 Sorry, I couldn't find any host named gone.example", "dns"),
        ("550 5.0.0 User x not listed in Domino Directory", "user_unknown"),
        ("550 5.2.1 Mailbox is frozen", "mailbox_disabled"),
        ("550 5.0.0 The recipient account is blocked", "mailbox_disabled"),
        ("530 5.7.0 Remote server does not support TLS", "tls_required"),
        ("550 5.7.1 Insecure Mail Relay", "relay_denied"),
        ("550 5.0.0 DNS Error: the MX lookup of example.org failed", "dns"),
        ("550 5.0.0 Denied by policy", "policy"),
        ("554 5.0.0 All recipients rejected: Access denied [relay 7]", "policy"),
        ("550 5.0.0 Unauthenticated email from example.org is not accepted", "sender_auth"),
    ],
)
def test_generic_rules_read_more_wordings(reply: str, category: str) -> None:
    i = explain(reply)
    assert getattr(i, "category", None) == category, i


def test_cli_email_json_says_when_the_status_is_inferred() -> None:
    r = run("explain", "--format", "json", "--email", str(BOUNCES / "delayed.eml"))
    assert r.exit_code == 0, r.output
    (doc,) = valid(json.loads(r.stdout), "explain")
    assert doc["inferred"] is True and doc["enhanced"] == "4.4.7"
    r = run("explain", "--format", "json", "--email", str(BOUNCES / "qmail.eml"))
    assert r.exit_code == 0, r.output
    assert all("inferred" not in d for d in valid(json.loads(r.stdout), "explain"))


def test_dsn_status_completes_a_vaguer_transcript_status() -> None:
    """A transcript's 5.0.0 says less than the DSN's 5.3.0; the transcript's code stays."""
    (i,) = explain_email((BOUNCES / "sendmail-local.eml").read_bytes())
    assert (i.recipient, i.reply.code, str(i.reply.enhanced)) == ("lena@example.org", 550, "5.3.0")


def test_a_transcripts_success_lines_are_not_the_failure() -> None:
    data = (
        b"Subject: Undelivered Mail Returned to Sender\n\n"
        b"Transcript of the session:\n\n"
        b" Out: 220 mx.example.org ESMTP\n Out: 250 2.0.0 Ok\n"
        b" In:  RCPT TO:<olga@example.org>\n Out: 250 2.1.5 Ok\n"
        b" In:  DATA\n Out: 451 4.3.0 Error: the spool could not be written\n"
    )
    (i,) = explain_email(data)
    assert (i.recipient, i.reply.code, str(i.reply.enhanced)) == ("olga@example.org", 451, "4.3.0")


def test_delivery_status_fields_behind_a_broken_boundary() -> None:
    """An indented boundary hides the DSN part; its fields in the text are still read per recipient."""
    got = items("broken-boundary.eml")
    assert [(r, c, e) for r, c, e, _ in got] == [
        ("pia@example.org", 550, "5.0.0"),
        ("quinn@slow.example", None, "4.4.3"),
    ]
    fs = read_email((BOUNCES / "broken-boundary.eml").read_bytes())
    assert [f.action for f in fs] == ["failed", "delayed"]
    assert fs[0].reply.text == "this name is not known at this gateway"
