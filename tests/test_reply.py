"""The reply parser: every input form of issue 2, and total behaviour on any text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.model import Form, NotAReply, Reply
from probe.reply import iter_replies, parse

GMAIL_FOLDED = (
    "550-5.1.1 The mailbox you wrote to is not here. Please check 550-5.1.1 the spelling of "
    "the address and try 550-5.1.1 once more. Details at 550 5.1.1 "
    "https://support.google.com/mail/?p=NoSuchUser a1-20020a05 - gsmtp"
)


@pytest.mark.parametrize(
    ("item", "code", "enhanced", "form", "command", "text"),
    [
        ("421", 421, None, Form.CODE, None, ""),
        (" 250 ", 250, None, Form.CODE, None, ""),
        ("5.7.26", None, "5.7.26", Form.ENHANCED, None, ""),
        ("550 5.1.1 User unknown", 550, "5.1.1", Form.REPLY, None, "User unknown"),
        ("554 Transaction failed", 554, None, Form.REPLY, None, "Transaction failed"),
        (
            "250-mx.example.net Hello\n250-PIPELINING\n250 SIZE 1000",
            250,
            None,
            Form.MULTILINE,
            None,
            "mx.example.net Hello PIPELINING SIZE 1000",
        ),
        (
            "452-4.5.3 Too many recipients\r\n452 4.5.3 send the rest later",
            452,
            "4.5.3",
            Form.MULTILINE,
            None,
            "Too many recipients send the rest later",
        ),
        (
            GMAIL_FOLDED,
            550,
            "5.1.1",
            Form.FOLDED,
            None,
            "The mailbox you wrote to is not here. Please check the spelling of the address and "
            "try once more. Details at https://support.google.com/mail/?p=NoSuchUser a1-20020a05 "
            "- gsmtp",
        ),
        (
            "Nov 22 09:14:07 relay postfix/smtp[2211]: 4Bc9Xk0ZqPz: to=<kim@example.org>, "
            "relay=mx.example.org[192.0.2.10]:25, delay=0.4, dsn=5.1.1, status=bounced (host "
            "mx.example.org[192.0.2.10] said: 550 5.1.1 <kim@example.org>: Recipient address "
            "rejected: User unknown in virtual mailbox table (in reply to RCPT TO command))",
            550,
            "5.1.1",
            Form.POSTFIX,
            "RCPT",
            "<kim@example.org>: Recipient address rejected: User unknown in virtual mailbox table",
        ),
        (
            "Nov 22 09:15:00 mx postfix/smtpd[77]: NOQUEUE: reject: RCPT from "
            "unknown[198.51.100.7]: 450 4.7.25 Client host rejected: cannot find your hostname, "
            "[198.51.100.7]; from=<a@example.com> to=<b@example.net> proto=ESMTP helo=<box>",
            450,
            "4.7.25",
            Form.POSTFIX,
            "RCPT",
            "Client host rejected: cannot find your hostname, [198.51.100.7]",
        ),
        (
            "host mx.example.org[192.0.2.10] said: 552 5.3.4 Message too big (in reply to end "
            "of DATA command)",
            552,
            "5.3.4",
            Form.POSTFIX,
            "DOT",
            "Message too big",
        ),
        (
            "2026-11-22 09:16:01 1vX2aB-000Kx1-3Q ** ops@example.net R=dnslookup T=remote_smtp "
            "H=mx.example.net [192.0.2.20]: SMTP error from remote mail server after RCPT "
            "TO:<ops@example.net>: 550 5.7.1 Relaying denied",
            550,
            "5.7.1",
            Form.EXIM,
            "RCPT",
            "Relaying denied",
        ),
        (
            "SMTP error from remote mail server after MAIL FROM:<a@example.com> SIZE=1234: "
            "421 4.7.0 Try again later",
            421,
            "4.7.0",
            Form.EXIM,
            "MAIL",
            "Try again later",
        ),
        (
            "Diagnostic-Code: smtp; 550 5.2.2 <lee@example.org>: mailbox full",
            550,
            "5.2.2",
            Form.DSN,
            None,
            "<lee@example.org>: mailbox full",
        ),
        ("Status: 4.4.7", None, "4.4.7", Form.DSN, None, ""),
        ("<** 550 5.7.1 Relaying denied", 550, "5.7.1", Form.SWAKS, None, "Relaying denied"),
        ("<~ 250 2.0.0 Ok: queued", 250, "2.0.0", Form.SWAKS, None, "Ok: queued"),
        (
            "511 sorry, no mailbox here by that name (#5.1.1 - chkuser)",
            511,
            "5.1.1",
            Form.REPLY,
            None,
            "sorry, no mailbox here by that name (#5.1.1 - chkuser)",
        ),
        (
            "host mx.example.org[192.0.2.10] refused to talk to me: 554 5.7.1 Go away",
            554,
            "5.7.1",
            Form.POSTFIX,
            "CONNECT",
            "Go away",
        ),
    ],
)
def test_forms(
    item: str, code: int | None, enhanced: str | None, form: Form, command: str | None, text: str
) -> None:
    r = parse(item)
    assert r is not None
    assert r.code == code
    assert (str(r.enhanced) if r.enhanced else None) == enhanced
    assert r.form is form
    assert r.command == command
    assert r.text == text


@pytest.mark.parametrize(
    "item",
    ["", "   ", "hello world", "0", "999", "99", "1000", "Nov 22 mx postfix: connect from x"],
)
def test_not_a_reply(item: str) -> None:
    assert parse(item) is None


def test_unknown_code_in_range_is_still_a_reply() -> None:
    r = parse("299")
    assert r is not None and r.code == 299 and r.reply_class == 2


def test_stream_groups_multiline_and_swaks_commands() -> None:
    lines = [
        "=== Connected to 192.0.2.5.",
        "<-  220 mx.example.net ESMTP",
        " -> EHLO client.example.com",
        "<-  250-mx.example.net",
        "<-  250-PIPELINING",
        "<-  250 STARTTLS",
        " -> RCPT TO:<nobody@example.net>",
        "<** 550 5.1.1 No such user",
        "a line with nothing in it",
        "250-one",
        "250 two",
    ]
    out = list(iter_replies(lines))
    replies = [(i, r) for i, r in out if isinstance(r, Reply)]
    assert [r.command for _, r in replies] == ["CONNECT", "EHLO", "RCPT", None]
    assert replies[1][1].lines == ("250-mx.example.net", "250-PIPELINING", "250 STARTTLS")
    assert replies[3][1].text == "one two"
    assert sum(isinstance(r, NotAReply) for _, r in out) == 4


def test_stream_unterminated_multiline_is_not_lost() -> None:
    out = list(iter_replies(["250-first", "250-second"]))
    assert len(out) == 1
    assert isinstance(out[0][1], Reply)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_parse_never_raises_on_text(s: str) -> None:
    r = parse(s)
    assert r is None or isinstance(r, Reply)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parse_never_raises_on_bytes(b: bytes) -> None:
    r = parse(b.decode("utf-8", "surrogateescape"))
    assert r is None or isinstance(r, Reply)


@settings(max_examples=200, deadline=None)
@given(
    code=st.integers(200, 599),
    enh=st.one_of(st.none(), st.tuples(st.integers(0, 7), st.integers(0, 30))),
    words=st.lists(
        st.from_regex(r"[A-Za-z][A-Za-z,.]{0,10}", fullmatch=True), min_size=1, max_size=8
    ),
    nlines=st.integers(1, 4),
)
def test_round_trip_well_formed(
    code: int, enh: tuple[int, int] | None, words: list[str], nlines: int
) -> None:
    """A well-formed reply written out line by line parses back to the same code and text."""
    enhanced = f"{code // 100}.{enh[0]}.{enh[1]}" if enh and code // 100 != 3 else None
    text = " ".join(words)
    chunks = [text] if nlines == 1 else [" ".join(words[i::nlines]) for i in range(nlines)]
    chunks = [c for c in chunks if c] or [text]
    prefix = f"{enhanced} " if enhanced else ""
    lines = [f"{code}-{prefix}{c}" for c in chunks[:-1]] + [f"{code} {prefix}{chunks[-1]}"]
    r = parse("\r\n".join(lines))
    assert r is not None
    assert r.code == code
    assert (str(r.enhanced) if r.enhanced else None) == enhanced
    assert r.text == " ".join(" ".join(chunks).split())
