"""Typed values shared by the parser, the interpreter and every renderer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

# Value types are NamedTuples: immutable and compared by value as frozen dataclasses are, and
# a fifth of the cost to define (every command pays it at start-up). Reply stays a dataclass:
# the parser derives replies with dataclasses.replace.

CATEGORIES: tuple[str, ...] = (
    "success",
    "user_unknown",
    "mailbox_full",
    "mailbox_disabled",
    "rate_limited",
    "greylisted",
    "blocklisted",
    "reputation",
    "sender_auth",
    "auth_required",
    "auth_failed",
    "tls_required",
    "relay_denied",
    "dns",
    "policy",
    "spam",
    "content",
    "size",
    "recipients",
    "syntax",
    "sequence",
    "unavailable",
    "loop",
    "expired",
    "other",
)

ACTORS: tuple[str, ...] = ("sender", "recipient_admin", "network", "nobody")

COMMANDS: tuple[str, ...] = (
    "CONNECT",
    "EHLO",
    "HELO",
    "STARTTLS",
    "AUTH",
    "MAIL",
    "RCPT",
    "DATA",
    "DOT",
    "BDAT",
    "RSET",
    "VRFY",
    "EXPN",
    "HELP",
    "NOOP",
    "QUIT",
    "ETRN",
    "ATRN",
    "*",
)


class Form(StrEnum):
    """The shape the reply was found in."""

    CODE = "code"
    ENHANCED = "enhanced"
    REPLY = "reply"
    MULTILINE = "multiline"
    FOLDED = "folded"
    POSTFIX = "postfix"
    EXIM = "exim"
    DSN = "dsn"
    SWAKS = "swaks"
    LOG = "log"
    # A bounce's own words with no code: the enhanced code is inferred from them.
    BOUNCE_TEXT = "bounce_text"


class EnhancedCode(NamedTuple):
    """An RFC 3463 status code such as 5.7.26."""

    klass: int
    subject: int
    detail: int

    def __str__(self) -> str:
        return f"{self.klass}.{self.subject}.{self.detail}"

    @property
    def key(self) -> str:
        """The registry key without the class digit ("7.26")."""
        return f"{self.subject}.{self.detail}"


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply as found in some input; the code may be absent (a bare enhanced code)."""

    code: int | None
    enhanced: EnhancedCode | None
    text: str
    lines: tuple[str, ...]
    form: Form
    command: str | None = None
    other_codes: tuple[
        int, ...
    ] = ()  # codes of lines that disagree with the first (RFC 5321 §4.2.1)

    @property
    def reply_class(self) -> int:
        """First digit of the basic code, else the enhanced class."""
        if self.code is not None:
            return self.code // 100
        assert self.enhanced is not None
        return self.enhanced.klass


class RuleRef(NamedTuple):
    """Which rule decided an interpretation, and where its facts come from."""

    id: str
    source: str
    provider: str | None = None
    kind: str = "rule"  # rule | enhanced | basic | class


class Flag(NamedTuple):
    """A consistency note: an id plus the values its message needs."""

    id: str
    params: tuple[tuple[str, str], ...] = ()

    def kwargs(self) -> dict[str, str]:
        return dict(self.params)


class Interpretation(NamedTuple):
    """What one reply means; texts are looked up in a locale at render time."""

    input: str
    reply: Reply
    reply_class: int
    category: str
    retryable: bool
    wait: int
    actor: str
    rule: RuleRef
    basic_known: bool
    basic_standard: bool
    enhanced_known: bool
    flags: tuple[Flag, ...] = ()
    refs: tuple[str, ...] = ()
    # The failed recipient, when the reply came from a bounce email.
    recipient: str | None = None

    @property
    def text_keys(self) -> tuple[tuple[str, str], ...]:
        """Ordered (section, key) pairs where description, when and fix are looked up."""
        keys: list[tuple[str, str]] = []
        if self.rule.kind == "rule":
            keys.append(("rules", self.rule.id))
        if self.enhanced_known and self.reply.enhanced is not None:
            keys.append(("enhanced", self.reply.enhanced.key))
        if self.basic_known and self.reply.code is not None:
            keys.append(("basic", str(self.reply.code)))
        return tuple(keys)


class NotAReply(NamedTuple):
    """Input in which no SMTP reply could be found."""

    input: str
    reason: str = "not_a_reply"


Explained = Interpretation | NotAReply
