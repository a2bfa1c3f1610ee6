"""Pasted text admins have: swaks, Exim, Sendmail, Microsoft 365 and Gmail forms."""

from __future__ import annotations

import pytest

from probe.interpret import explain
from probe.model import Interpretation
from probe.pasted import parse_pasted

CASES = [
    ("<-  250 2.1.5 Ok", "swaks", 250, "2.1.5", "success"),
    (
        "<~  550 5.1.1 <kim@example.org>: Recipient address rejected: User unknown",
        "swaks",
        550,
        "5.1.1",
        "user_unknown",
    ),
    (
        "<** 550 5.1.1 <kim@example.org>: Recipient address rejected: User unknown",
        "swaks",
        550,
        "5.1.1",
        "user_unknown",
    ),
    ("<~* 554 5.7.1 <kim@example.org>: Relay access denied", "swaks", 554, "5.7.1", "relay_denied"),
    (
        "2024-06-03 10:00:00 1sE5-0001-AB ** kim@example.org R=dnslookup T=remote_smtp: SMTP error "
        "from remote mail server after RCPT TO:<kim@example.org>: 550 5.1.1 No such user here",
        "exim",
        550,
        "5.1.1",
        "user_unknown",
    ),
    (
        "2024-06-03 10:00:00 1sE5-0001-AB == kim@example.org R=dnslookup T=remote_smtp defer (-44) "
        "H=mx.example.org [192.0.2.7]: SMTP error from remote mail server after RCPT TO:<kim@example.org>: "
        "451 4.7.1 Greylisted, please try again later",
        "exim",
        451,
        "4.7.1",
        "greylisted",
    ),
    (
        "Jun  3 10:00:00 mx sm-mta[42]: 453A0B: to=<kim@example.org>, delay=00:00:01, mailer=esmtp, "
        "relay=mx.example.org. [192.0.2.7], dsn=4.2.2, stat=Deferred: 452 4.2.2 Mailbox full",
        "reply",
        452,
        "4.2.2",
        "mailbox_full",
    ),
    (
        "Jun  3 10:00:00 mx sm-mta[42]: 453A0B: to=<kim@example.org>, delay=00:00:01, mailer=esmtp, "
        "relay=mx.example.org., dsn=5.1.1, stat=User unknown",
        "log",
        None,
        "5.1.1",
        "user_unknown",
    ),
    (
        "Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by "
        "SMTP address lookup'",
        "reply",
        550,
        "5.1.10",
        "user_unknown",
    ),
    (
        "The response from the remote server was:\n550 5.1.1 The email account that you tried to "
        "reach does not exist. Please try\ndouble-checking the recipient's email address.",
        "reply",
        550,
        "5.1.1",
        "user_unknown",
    ),
    (
        ">>> RCPT To:<kim@example.org>\n<<< 550 5.1.1 <kim@example.org>... User unknown",
        "reply",
        550,
        "5.1.1",
        "user_unknown",
    ),
    ("<<< 550 Host unknown", "reply", 550, None, "dns"),
]


@pytest.mark.parametrize(("item", "form", "code", "enhanced", "category"), CASES)
def test_pasted_forms(
    item: str, form: str, code: int | None, enhanced: str | None, category: str
) -> None:
    for variant in (item, item.replace("\n", "\r\n"), item.replace("\n", "\r")):
        e = explain(variant)
        assert isinstance(e, Interpretation), variant
        assert (e.reply.code, str(e.reply.enhanced) if e.reply.enhanced else None) == (
            code,
            enhanced,
        )
        assert e.category == category
        assert str(e.reply.form) == form or "\n" in item


def test_gmail_reply_keeps_its_second_line() -> None:
    r = parse_pasted(CASES[9][0])
    assert r is not None and r.text.endswith("recipient's email address.")


@pytest.mark.parametrize(
    "text", ["", "hello", "<~*", "stat=", "Remote Server returned ''", "dsn=9.9.9"]
)
def test_no_reply_in_plain_words(text: str) -> None:
    assert parse_pasted(text) is None
