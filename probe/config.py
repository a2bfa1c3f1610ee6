"""Configuration as pure data: what to send, how long to wait, how many sessions at once.

Built in one place (the CLI's option translation, or a library caller) and passed down
unchanged; nothing below reads an option by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TypeVar

from probe.result import Target
from probe.verdict import Expectation

# One session is a handful of exchanges: greeting, EHLO, STARTTLS, EHLO, MAIL, RCPT, RSET,
# QUIT. When one value sets every timeout, the whole session may take this many of them.
BUDGET_PER_TIMEOUT = 8
DNS_TRY = 3.0  # seconds one DNS try waits at most before the next (within the lifetime)
# How far one probe walks a domain's mail hosts. MTAs stop early when delivering: Postfix
# tries at most 5 MX addresses (smtp_mx_address_limit) in at most 2 sessions
# (smtp_mx_session_limit), Exim 5 hosts (hosts_max_try). A probe with --all is there to show
# the hosts, so it goes further: 10 MX hosts, as internet.nl's mail test, and 20 addresses,
# an IPv4 and an IPv6 address for each. A domain publishing more is told so in the result.
MAX_MX = 10
MAX_ADDRESSES = 20

Options = TypeVar("Options", "SessionOptions", "ProbeRequest")


def changed(obj: Options, **values: object) -> Options:
    """`dataclasses.replace` for the options below, without running __init__ again: `obj` was
    checked when made, and a batch copies its options for every target (replace was the
    largest share of the Python a target costs). Each value must be of its field's type:
    __post_init__ does not see it."""
    if type(obj) not in (SessionOptions, ProbeRequest):  # a subclass may have fields of its own
        return replace(obj, **values)  # type: ignore[arg-type]  # (checked by replace itself)
    known = type(obj).__dataclass_fields__
    if not values.keys() <= known.keys():
        raise TypeError(f"{type(obj).__name__} has no field {sorted(values.keys() - known)}")
    new = object.__new__(type(obj))
    # One copy of the instance dict: these classes keep a __dict__ (no slots) for this, at a
    # third of the time of setting each slot. It holds their fields and nothing else (no
    # cached_property on them: a copy would carry it over, stale).
    fields = new.__dict__
    fields.update(obj.__dict__)
    fields.update(values)
    return new


class StartTls(StrEnum):
    AUTO = "auto"  # when the server offers it, as MTAs do
    REQUIRE = "require"
    NEVER = "never"


class QuitAfter(StrEnum):
    CONNECT = "connect"
    EHLO = "ehlo"
    TLS = "tls"
    MAIL = "mail"
    RCPT = "rcpt"


@dataclass(frozen=True, slots=True, init=False)
class Timeouts:
    """Seconds for each wait. One value sets them all; named ones override it.

    `Timeouts()` gives the defaults; `Timeouts(5)` waits 5 s for everything and allows
    `BUDGET_PER_TIMEOUT` times that in all; `Timeouts(5, budget=60)` keeps 5 s per wait
    and a 60 s budget.

    The budget bounds one whole target: its DNS lookups and the sessions with every MX host
    and address it walks. Each session gets what is left of it (`probe.runner`); a session
    run on its own (`run_session`) gets all of it.
    """

    connect: float
    greeting: float
    command: float
    dns: float  # one whole DNS lookup, retries included
    budget: float  # one whole target: DNS and every session

    def __init__(
        self,
        default: float | None = None,
        *,
        connect: float | None = None,
        greeting: float | None = None,
        command: float | None = None,
        dns: float | None = None,
        budget: float | None = None,
    ) -> None:
        def pick(named: float | None, usual: float) -> float:
            if named is not None:
                return named
            return usual if default is None else default

        set_ = object.__setattr__
        set_(self, "connect", pick(connect, 10.0))
        set_(self, "greeting", pick(greeting, 30.0))
        set_(self, "command", pick(command, 30.0))
        set_(self, "dns", pick(dns, 8.0))
        usual_budget = 120.0 if default is None else default * BUDGET_PER_TIMEOUT
        set_(self, "budget", budget if budget is not None else usual_budget)

    @property
    def dns_try(self) -> float:
        """How long one DNS try waits: a lost packet is asked again within the lifetime."""
        return min(DNS_TRY, self.dns)


@dataclass(frozen=True)
class SessionOptions:
    """How to talk to one server."""

    helo: str | None = None
    mail_from: str = ""
    rcpts: tuple[str, ...] = ()
    starttls: StartTls = StartTls.AUTO
    implicit_tls: bool = False
    cafile: str | None = None
    quit_after: QuitAfter | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    resume_tls: bool = True  # offer a TLS session saved from this run's last visit
    source_address: str | None = None  # the local address to connect from (batch --source-address)
    # When the target's budget runs out (time.monotonic()); a session ends by then whatever
    # its own budget says. Not part of what makes two sessions' options alike: a kept
    # connection or a shared session serves targets whose deadlines differ.
    deadline: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Library callers may pass the plain words; the dialogue compares enums. (Checked
        # first: a batch copies its options for every target, and an enum call is not free.)
        if type(self.starttls) is not StartTls:
            object.__setattr__(self, "starttls", StartTls(self.starttls))
        if self.quit_after is not None and type(self.quit_after) is not QuitAfter:
            object.__setattr__(self, "quit_after", QuitAfter(self.quit_after))


@dataclass(frozen=True)
class ProbeRequest:
    """One target and how to probe it."""

    target: Target
    session: SessionOptions = field(default_factory=SessionOptions)
    port: int | None = None
    all_hosts: bool = False
    # With all_hosts: once an address of an MX host completed a session, that host's other
    # addresses are skipped (one answer per host, as a monitor wants, not per address).
    one_address: bool = False
    family: int | None = None  # 4 or 6; None for both
    seed: int | None = None  # for shuffling MX hosts of equal preference
    nameservers: tuple[tuple[str, int], ...] = ()
    expectations: tuple[Expectation, ...] = ()
    max_mx: int = MAX_MX  # MX hosts looked up and tried, in delivery order
    max_addresses: int = MAX_ADDRESSES  # addresses tried, over all MX hosts

    @property
    def dns_timeout(self) -> float:
        return self.session.timeouts.dns


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """How hard a batch may press: overall, per MX address, and per kept connection."""

    concurrency: int = 20  # sessions at once, overall
    per_host: int = 2  # sessions (and connections) at once to one MX address
    rate: float | None = None  # targets started per second, overall
    reuse: int = 1  # targets one connection may serve; 1 opens one per target
    idle: float = 2.0  # seconds a kept connection waits for its next target
    # A kept connection is retired once it has drawn this many 4xx/5xx replies: Postfix
    # slows every reply by a second after 10 (smtpd_soft_error_limit), Exim and others
    # count errors per connection too, and a new connection starts at zero.
    rejections: int = 5
    # The provider is the registrable domain of the MX host name (probe.shard.registrable):
    # providers throttle a source address over all their MX hosts together.
    per_provider: int | None = None  # sessions at once to one provider; None: no bound
    provider_rate: float | None = None  # sessions started per second to one provider

    def share(self, n: int) -> BatchLimits:
        """This process's part when `n` processes share the limits (rounded down, at least 1)."""
        return BatchLimits(
            max(1, self.concurrency // n),
            max(1, self.per_host // n),
            self.rate / n if self.rate else None,
            self.reuse,
            self.idle,
            self.rejections,
            max(1, self.per_provider // n) if self.per_provider else None,
            self.provider_rate / n if self.provider_rate else None,
        )
