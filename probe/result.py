"""The typed result of a live probe: DNS, sessions, steps, TLS facts, verdict.

Every output (text transcript, JSON, exit status) is rendered from a `ProbeResult`.
Network failures are values here (`StepError`, `DnsStatus`), never exceptions. The records are
NamedTuples rather than dataclasses: immutable all the same, and a tenth of the start-up cost
(a whole `probe` process loads every one of them).
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from probe.model import Interpretation


class DnsStatus(StrEnum):
    OK = "ok"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    SERVFAIL = "servfail"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    ERROR = "error"


class Dnssec(StrEnum):
    """What a validating resolver said of an answer (RFC 4035 §4.3)."""

    SECURE = "secure"  # validated: the AD bit was set
    INSECURE = "insecure"  # answered without the AD bit: provably unsigned, or not validated
    BOGUS = "bogus"  # validation failed: SERVFAIL, yet the same query with CD=1 is answered
    INDETERMINATE = "indeterminate"  # no answer to judge (timeout, REFUSED, plain SERVFAIL)


class ErrorKind(StrEnum):
    """Why a step got no reply, in words a person can act on."""

    REFUSED = "refused"
    TIMEOUT = "timeout"
    NO_GREETING = "no_greeting"
    DISCONNECTED = "disconnected"
    TLS_FAILED = "tls_failed"
    PROTOCOL = "protocol"
    TOO_LONG = "too_long"
    UNREACHABLE = "unreachable"
    BUDGET = "budget"
    NOT_OFFERED = "not_offered"
    REFUSED_LOCALLY = "refused_locally"


class StepError(NamedTuple):
    kind: ErrorKind
    detail: str


class WireReply(NamedTuple):
    """A reply as captured on the wire, with its interpretation."""

    code: int
    enhanced: str | None
    lines: tuple[str, ...]
    interpretation: Interpretation | None


class Step(NamedTuple):
    """One exchange: the command sent (CONNECT for the greeting) and what came back."""

    command: str
    sent: str | None
    reply: WireReply | None
    elapsed_ms: float
    error: StepError | None = None
    tls: bool = False
    note: str | None = None
    # The part of elapsed_ms before the reply was awaited: the TCP connect (and TLS with
    # --tls) for CONNECT, the TLS handshake after 220 for STARTTLS; None for other steps.
    setup_ms: float | None = None


class Certificate(NamedTuple):
    subject: str
    issuer: str
    sans: tuple[str, ...]
    not_before: str
    not_after: str
    days_left: int
    sha256: str
    der: bytes = b""  # for DANE matching; never rendered


class TlsInfo(NamedTuple):
    offered: bool
    attempted: bool
    implicit: bool = False
    ok: bool = False
    protocol: str | None = None
    cipher: str | None = None
    certificate: Certificate | None = None
    trusted: bool | None = None
    verify_error: str | None = None
    name_matches: bool | None = None
    error: str | None = None
    injected_plaintext: int = 0
    resumed: bool = False  # an earlier session of the run was resumed (no certificate sent)
    chain: tuple[bytes, ...] = ()  # the certificates sent, leaf first (DANE); never rendered


class Outcome(StrEnum):
    """How a session ended, set once by the session and read by every output."""

    # It ran as far as asked: the replies say the rest.
    COMPLETED = "completed"
    QUIT_AFTER_CONNECT = "quit_after_connect"
    QUIT_AFTER_EHLO = "quit_after_ehlo"
    QUIT_AFTER_TLS = "quit_after_tls"
    MAIL_ANSWERED = "mail_answered"  # MAIL drew a refusal, or --quit-after mail
    # The server would not talk.
    GREETING_1XX = "greeting_1xx"
    GREETING_3XX = "greeting_3xx"
    GREETING_4XX = "greeting_4xx"
    GREETING_5XX = "greeting_5xx"
    EHLO_FAILED = "ehlo_failed"
    STARTTLS_NOT_OFFERED = "starttls_not_offered"
    TLS_FAILED = "tls_failed"
    MAIL_FAILED = "mail_failed"
    RCPT_FAILED = "rcpt_failed"
    BUDGET = "budget"
    # The exchange that ended it got no reply (the `ErrorKind` of that step).
    REFUSED = "refused"
    TIMEOUT = "timeout"
    NO_GREETING = "no_greeting"
    DISCONNECTED = "disconnected"
    PROTOCOL = "protocol"
    TOO_LONG = "too_long"
    UNREACHABLE = "unreachable"
    NOT_OFFERED = "not_offered"
    REFUSED_LOCALLY = "refused_locally"

    @property
    def completed(self) -> bool:
        """The session ran as far as it was asked to (its replies decide the verdict)."""
        return self in _COMPLETED

    @classmethod
    def of_greeting(cls, code: int) -> Outcome:
        try:
            return cls(f"greeting_{code // 100}xx")
        except ValueError:  # no reply class at all (0xx, 6xx-9xx)
            return cls.PROTOCOL

    @classmethod
    def of_error(cls, kind: ErrorKind) -> Outcome:
        return cls(kind.value)


_COMPLETED = frozenset(
    {
        Outcome.COMPLETED,
        Outcome.QUIT_AFTER_CONNECT,
        Outcome.QUIT_AFTER_EHLO,
        Outcome.QUIT_AFTER_TLS,
        Outcome.MAIL_ANSWERED,
    }
)


class Session(NamedTuple):
    host: str
    address: str
    port: int
    steps: tuple[Step, ...]
    tls: TlsInfo
    extensions: tuple[tuple[str, str], ...] = ()
    outcome: Outcome = Outcome.COMPLETED
    helo: str = ""
    reused: bool = False  # ran on a connection opened for an earlier target (batch)

    @property
    def completed(self) -> bool:
        return self.outcome.completed


class MxHost(NamedTuple):
    host: str
    preference: int | None
    addresses: tuple[str, ...]
    status: DnsStatus = DnsStatus.OK
    implicit: bool = False
    cname: str | None = None
    error: str | None = None


class DnsResult(NamedTuple):
    domain: str
    status: DnsStatus
    mx: tuple[MxHost, ...] = ()
    null_mx: bool = False
    implicit: bool = False
    error: str | None = None
    omitted: int = 0  # MX hosts past the limit (`ProbeRequest.max_mx`): not looked up


class Note(NamedTuple):
    """Where a probe stopped short of what was asked, and why: `budget` (the time allowed
    for the target ran out), `max_mx` or `max_addresses` (the caps on how far it walks)."""

    kind: str
    detail: str


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    NO_DOMAIN = "no_domain"
    NULL_MX = "null_mx"
    NO_HOST = "no_host"
    UNREACHABLE = "unreachable"
    DNS_FAILURE = "dns_failure"
    EXPECTATION_FAILED = "expectation_failed"


class ExpectationResult(NamedTuple):
    expectation: str
    met: bool
    detail: str


class Target(NamedTuple):
    """What the user asked to probe, after normalisation (IDNA, literals, ports)."""

    raw: str
    kind: str  # domain | address | host | literal
    domain: str | None
    host: str | None
    port: int | None
    rcpt: tuple[str, ...] = ()
    display: str = ""


class ProbeResult(NamedTuple):
    target: Target
    dns: DnsResult | None
    sessions: tuple[Session, ...]
    verdict: Verdict
    reason: str
    expectations: tuple[ExpectationResult, ...] = ()
    started_at: str = ""
    elapsed_ms: float = 0.0
    notes: tuple[Note, ...] = ()
