"""Bounce emails whose structure bends the standards, codeless wordings of more MTA families,
and reply forms pasted from them (issue 14). Every email here is a small one written for the
test: each shows one general rule, not one sender's notice."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from click.testing import CliRunner

from probe.bounce import explain_email, read_email
from probe.cli import cli
from probe.interpret import explain
from probe.model import Interpretation
from probe.pasted import parse_pasted, stream_reply
from probe.reply import scan

ENV = {"NO_COLOR": "1", "LANG": "C", "LC_ALL": "", "LC_MESSAGES": ""}


def got(data: bytes) -> list[tuple[str | None, int | None, str | None, str]]:
    out = []
    for i in explain_email(data):
        enh = str(i.reply.enhanced) if i.reply.enhanced else None
        out.append((i.recipient, i.reply.code, enh, i.category))
    return out


DSN_FIELDS = (
    "Reporting-MTA: dns; relay.example.net\n\n"
    "Final-Recipient: rfc822; ana@example.org\nAction: failed\nStatus: 5.1.1\n"
    "Diagnostic-Code: smtp; 550 5.1.1 <ana@example.org>: user unknown\n"
)


def test_a_multipart_whose_boundary_never_comes_is_read_as_text() -> None:
    """A mistyped boundary leaves one body: its delivery-status fields are still read."""
    data = (
        "From: MAILER-DAEMON@relay.example.net\nSubject: Undelivered Mail\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="AAA.1"\n\n'
        "--AAA.2\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
        "--AAA.2\nContent-Type: message/delivery-status\n\n" + DSN_FIELDS + "\n--AAA.2--\n"
    ).encode()
    assert got(data) == [("ana@example.org", 550, "5.1.1", "user_unknown")]


def test_recipient_blocks_without_a_blank_line_between_them() -> None:
    """A Final-Recipient seen again starts the next recipient, blank line or not."""
    data = (
        b"From: MAILER-DAEMON@relay.example.net\nSubject: failed\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain\n\nTwo recipients failed.\n\n"
        b"--b\nContent-Type: message/delivery-status\n\n"
        b"Reporting-MTA: dns; relay.example.net\n\n"
        b"Final-Recipient: rfc822; bo@example.org\nAction: failed\nStatus: 5.2.2\n"
        b"Diagnostic-Code: smtp; 552 5.2.2 <bo@example.org>... Mailbox full\n"
        b"Final-Recipient: rfc822; cy@example.org\nAction: failed\nStatus: 5.1.1\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 <cy@example.org>... User unknown\n\n--b--\n"
    )
    assert got(data) == [
        ("bo@example.org", 552, "5.2.2", "mailbox_full"),
        ("cy@example.org", 550, "5.1.1", "user_unknown"),
    ]


def _notice_with(attached: str) -> bytes:
    return (
        "From: postmaster@filter.example.net\nSubject: Mail could not be delivered\n"
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="outer"\n\n'
        "--outer\nContent-Type: text/plain\n\nThe following mail could not be delivered.\n\n"
        "--outer\nContent-Type: message/rfc822\n\n" + attached + "\n--outer--\n"
    ).encode()


def test_a_notice_without_a_reason_is_read_through_the_bounce_it_returns() -> None:
    inner = (
        "From: MAILER-DAEMON@mx.example.org\nTo: sender@example.net\nSubject: Returned mail\n\n"
        "----- Transcript of session follows -----\n"
        ">>> RCPT To:<dee@example.org>\n<<< 550 5.1.1 <dee@example.org>... User unknown\n"
    )
    assert got(_notice_with(inner)) == [("dee@example.org", 550, "5.1.1", "user_unknown")]


def test_a_returned_ordinary_message_is_not_a_failure() -> None:
    """Words in a returned message ("spam", "blocked") are the sender's text, not a reason."""
    inner = (
        "From: eve@example.net\nTo: fay@example.org\nSubject: offer\n\n"
        "Not spam, I promise: my mailbox is full of blocked senders.\n"
    )
    assert got(_notice_with(inner)) == []


def test_an_mbox_of_bounces_gives_each_one() -> None:
    def one(rcpt: str, status: str) -> str:
        return (
            f"From MAILER-DAEMON  Thu Apr 29 23:34:45 2021\nFrom: MAILER-DAEMON@mx.example.net\n"
            f"Subject: Delivery Status\nMIME-Version: 1.0\n"
            f'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
            f"--b\nContent-Type: text/plain\n\nReport.\n\n"
            f"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
            f"Final-Recipient: rfc822; {rcpt}\nAction: failed\nStatus: {status}\n\n--b--\n"
        )

    data = (one("gus@example.org", "5.1.1") + "\n" + one("hal@example.org", "4.4.1")).encode()
    assert [(r, e) for r, _, e, _ in got(data)] == [
        ("gus@example.org", "5.1.1"),
        ("hal@example.org", "4.4.1"),
    ]
    # A single message that starts with a "From " line is one message.
    assert len(got(one("gus@example.org", "5.1.1").encode())) == 1


def _dsn(fields: str, text: str = "Delivery failed.") -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.net\nSubject: failed\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        f"--b\nContent-Type: text/plain\n\n{text}\n\n"
        "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
        f"{fields}\n\n--b--\n"
    ).encode()


def test_a_status_comment_is_the_reason_when_no_diagnostic_is_given() -> None:
    data = _dsn(
        "Final-Recipient: rfc822;ida@far.example\nAction: delayed\n"
        "Status: 4.0.0 (far.example: host name lookup failure)"
    )
    (i,) = explain_email(data)
    assert (i.recipient, str(i.reply.enhanced), i.category) == ("ida@far.example", "4.0.0", "dns")
    assert i.reply.text == "far.example: host name lookup failure"


def test_a_bare_status_takes_the_human_sentence_about_its_recipient() -> None:
    """The written status stays; the sentence beside it says why."""
    data = _dsn(
        "Final-Recipient: rfc822; jo@example.it\nAction: failed\nStatus: 5.0.0",
        "Your message wasn't delivered to jo@example.it because the address couldn't be found.",
    )
    (i,) = explain_email(data)
    assert (i.recipient, str(i.reply.enhanced), i.category) == (
        "jo@example.it",
        "5.0.0",
        "user_unknown",
    )


@pytest.mark.parametrize(
    ("line", "enhanced", "category"),
    [
        ("This account has been disabled or discontinued.", "5.2.1", "mailbox_disabled"),
        ("Could not deliver for the last 432000 seconds. Giving up.", "4.4.7", "expired"),
        ("Unable to deliver message after multiple retries, giving up.", "4.4.7", "expired"),
        ("No mx record found for domain=far.example", "5.1.2", "dns"),
        ("an MX or SRV record indicated no SMTP service", "5.1.2", "dns"),
        ("Delivery to the following recipient failed permanently:", "5.0.0", "other"),
        ("You are not a member of this mailing list.", "5.7.1", "policy"),
    ],
)
def test_more_codeless_wordings(line: str, enhanced: str, category: str) -> None:
    data = f"Subject: failed\n\n  kay@far.example\n    {line}\n".encode()
    (i,) = explain_email(data)
    assert (i.recipient, str(i.reply.enhanced), i.category) == (
        "kay@far.example",
        enhanced,
        category,
    )


def test_permanent_errors_heading_alone_is_not_a_reason() -> None:
    """Sendmail's "permanent fatal errors" heading precedes the reason; it is not one."""
    data = (
        b"Subject: Returned mail\n\n----- The following addresses had permanent fatal errors"
        b" -----\n<lou@example.org>\n    (reason: 550 5.1.1 User unknown)\n"
    )
    assert [(r, c, e) for r, c, e, _ in got(data)] == [("lou@example.org", 550, "5.1.1")]


# ----------------------------------------------------------------- reply forms


@pytest.mark.parametrize(
    ("item", "code", "enhanced", "text"),
    [
        ("501: 5.1.8 Sender address rejected", 501, "5.1.8", "Sender address rejected"),
        ("550 #5.1.0 Address rejected.", 550, "5.1.0", "Address rejected."),
        ("220-mx.example.org 421 4.2.1 Service refused, try later", 421, "4.2.1", None),
    ],
)
def test_reply_forms_of_more_mtas(item: str, code: int, enhanced: str, text: str | None) -> None:
    r = parse_pasted(item)
    assert r is not None and (r.code, str(r.enhanced)) == (code, enhanced)
    if text is not None:
        assert r.text == text


def test_a_greeting_that_refuses_keeps_what_it_first_said() -> None:
    r = parse_pasted("220-mx.example.org 421 4.2.1 Service refused")
    assert r is not None and r.other_codes == (220,) and r.reply_class == 4


@pytest.mark.parametrize(
    "item",
    [
        "250 2.0.0 Ok: queued as 550 5.1.1",  # one line: the text is not a second reply
        "550 #4.1.0 Address rejected.",  # a hash status of another class is text
        "220 mx.example.org ESMTP 554 5.7.1 ready",
    ],
)
def test_what_only_looks_like_those_forms_is_left_alone(item: str) -> None:
    r = parse_pasted(item)
    assert r is not None and r.code == int(item[:3]) and r.other_codes == ()
    assert r.enhanced is None or r.enhanced.klass == r.code // 100


@pytest.mark.parametrize(
    ("reply", "category"),
    [
        ("550 5.7.1 Message content rejected, UBE, id=12345-01", "spam"),
        ("550 5.7.1 REJECTED - Blacklisted URL in message.", "spam"),
        ("553 sub.far.example does not exist", "dns"),
        ("550 5.7.1 Client host blocked using a block list", "blocklisted"),
    ],
)
def test_generic_rules_follow_the_replys_meaning(reply: str, category: str) -> None:
    i = explain(reply)
    assert isinstance(i, Interpretation) and i.category == category


def test_blocked_for_its_content_is_not_a_block_list() -> None:
    i = explain("552 5.7.0 This message was blocked because of its content.")
    assert isinstance(i, Interpretation) and i.category != "blocklisted"


def test_read_email_never_raises_on_nested_returned_bounces() -> None:
    """A returned bounce inside a returned bounce inside...: bounded, no exception."""
    inner = "From: a@b.example\nSubject: x\n\nhello\n"
    for _ in range(12):
        inner = _notice_with(inner).decode()
    assert read_email(inner.encode()) == []


# ----------------------------------------------------------------- `explain -`

PASTED = [
    "Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found'",
    "Jan  1 00:00:00 mx sm-mta[12]: x1: to=<kim@example.org>, delay=00:00:01, mailer=esmtp, "
    "relay=mx.example.org. [192.0.2.1], dsn=5.1.1, stat=User unknown",
    "Jan  1 00:00:00 mx sm-mta[12]: x2: to=<kim@example.org>, mailer=esmtp, dsn=4.0.0, "
    "stat=Deferred: Connection refused by mx.example.org.",
    "<<< 550 5.1.1 <kim@example.org>... User unknown",
    "The response from the remote server was: 550 5.1.1 no such user",
    "501: 5.1.8 Sender address rejected",
    "550 #5.1.0 Address rejected.",
    "Remote host said: 220-mx.example.org 421 4.2.1 Service refused",
    "2024-01-01 00:00:00 1abc-000 ** kim@example.org R=dnslookup T=remote_smtp "
    "H=mx.example.org [192.0.2.1]: SMTP error from remote mail server after RCPT "
    "TO:<kim@example.org>: 550 5.1.1 User unknown",
]


def _json(args: list[str], data: str | None = None) -> Any:
    r = CliRunner().invoke(cli, ["explain", "--format", "jsonl", *args], input=data, env=ENV)
    assert r.exit_code == 0, r.output
    return [json.loads(line) for line in r.stdout.splitlines()]


@pytest.mark.parametrize("line", PASTED)
def test_a_pasted_line_on_stdin_reads_as_the_same_argument(line: str) -> None:
    assert _json(["-"], line + "\n") == _json([line])


def test_stream_reply_agrees_with_parse_pasted_line_by_line() -> None:
    for line, scanned in scan(PASTED):
        assert stream_reply(line, scanned) == parse_pasted(line), line


def test_a_pasted_log_still_streams_its_lines_in_order() -> None:
    docs = _json(["-"], "".join(line + "\nnoise without a reply\n" for line in PASTED))
    assert [d["code"] for d in docs] == [550, None, None, 550, 550, 501, 550, 421, 550]


def test_a_body_line_starting_with_from_does_not_split_an_mbox() -> None:
    data = (
        b"From MAILER-DAEMON  Thu Apr 29 23:34:45 2021\nFrom: MAILER-DAEMON@mx.example.net\n"
        b"Subject: failed\n\n  max@example.org\n    550 5.1.1 unknown user\n\n"
        b"From what we can tell, the address is wrong.\n"
    )
    assert [r for r, _, _, _ in got(data)] == ["max@example.org"]


@pytest.mark.parametrize(
    ("charset", "body"),
    [
        ("iso-8859-1", "550 5.1.1 Empf\xe4nger unbekannt".encode("latin-1")),
        ("x-no-such-charset", "550 5.1.1 Empfänger unbekannt".encode()),
    ],
)
def test_text_parts_are_decoded_by_their_charset(charset: str, body: bytes) -> None:
    data = (
        b"Subject: failed\nMIME-Version: 1.0\nContent-Type: text/plain; charset="
        + charset.encode()
        + b"\nContent-Transfer-Encoding: 8bit\n\n  ned@example.org\n    "
        + body
        + b"\n"
    )
    (f,) = read_email(data)
    assert (f.recipient, f.reply.text) == ("ned@example.org", "Empfänger unbekannt")


def test_an_html_notices_style_sheet_is_not_read_as_words() -> None:
    data = (
        b"Subject: Undeliverable\nMIME-Version: 1.0\nContent-Type: text/html\n\n"
        b"<html><head><STYLE type='text/css'>\n/* when the mailbox is full */\n"
        b".blocked { color: red }\n</style></head><body><p>We could not deliver to</p>\n"
        b"<p>oli@example.org</p><p>No such user here</p></body></html>\n"
    )
    assert got(data) == [("oli@example.org", None, "5.1.1", "user_unknown")]


def _synthetic() -> list[bytes]:
    inner = "From: MAILER-DAEMON@mx.example.org\nSubject: x\n\n<<< 550 5.1.1 <p@example.org>\n"
    mbox = (
        "From MAILER-DAEMON  Thu Apr 29 23:34:45 2021\nSubject: a\n\n  q@example.org\n"
        "    Giving up.\n\nFrom MAILER-DAEMON  Fri Apr 30 23:34:45 2021\nSubject: b\n\n"
        "  r@example.org\n    501: 5.1.8 Sender address rejected\n"
    )
    return [
        _notice_with(inner),
        mbox.encode(),
        _dsn("Final-Recipient: rfc822;s@example.org\nStatus: 4.0.0 (x)\nStatus: 5.0.0"),
        _dsn("Final-Recipient: rfc822;t@example.org\nAction: failed\nStatus: 5.0.0", "t@x.example"),
    ]


def test_mutations_of_these_structures_never_raise() -> None:
    rnd = random.Random(14)
    for data in _synthetic():
        for _ in range(150):
            d = bytearray(data)
            for _ in range(rnd.randint(1, 12)):
                pos = rnd.randrange(len(d) or 1)
                if rnd.random() < 0.5:
                    d[pos : pos + rnd.randint(1, 20)] = b""
                else:
                    d[pos:pos] = rnd.choice(
                        [b"\n", b"\n\nFrom x Mon ", b"--outer\n", b"(", b"\xff"]
                    )
            for i in explain_email(bytes(d)):
                assert i.reply.code is not None or i.reply.enhanced is not None
