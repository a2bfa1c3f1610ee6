"""The options `probe` and `batch` share, and their one translation into configuration."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import click

from probe.cli.common import AsciiDecimal, AsciiInt, Choice, ExistingFile, fail, refuse
from probe.config import (
    MAX_ADDRESSES,
    MAX_MX,
    ProbeRequest,
    QuitAfter,
    SessionOptions,
    StartTls,
    Timeouts,
)
from probe.messages import carried
from probe.result import Target
from probe.target import TargetError, check_address, check_helo, parse_port, shown
from probe.verdict import parse_expectation

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class LiveArgs:
    """The shared options as click parsed them; `request` turns them into configuration."""

    port: int | None
    implicit_tls: bool
    starttls: str
    cafile: str | None
    no_tls_resume: bool
    helo: str | None
    mail_from: str
    rcpt: tuple[str, ...]
    quit_after: str | None
    timeout: float | None
    connect_timeout: float | None
    greeting_timeout: float | None
    command_timeout: float | None
    dns_timeout: float | None
    budget: float | None
    all_hosts: bool
    ipv4: bool
    ipv6: bool
    seed: int | None
    nameserver: tuple[str, ...]
    expect: tuple[str, ...]
    max_mx: int
    max_addresses: int

    @property
    def family(self) -> int | None:
        if self.ipv4 and self.ipv6:
            refuse("usage.exclusive_46")
        return 4 if self.ipv4 else 6 if self.ipv6 else None

    def timeouts(self) -> Timeouts:
        return Timeouts(
            self.timeout,
            connect=self.connect_timeout,
            greeting=self.greeting_timeout,
            command=self.command_timeout,
            dns=self.dns_timeout,
            budget=self.budget,
        )

    def request(self) -> ProbeRequest:
        """A ProbeRequest template (the target is filled in later); bad values end here."""
        family = self.family
        try:
            helo = check_helo(self.helo) if self.helo is not None else None
            sender = check_address(self.mail_from, "--from")
            rcpts = tuple(check_address(r, "--rcpt") for r in self.rcpt)
            expectations = tuple(parse_expectation(e) for e in self.expect)
        except (TargetError, ValueError) as e:
            fail(carried(e))
        opts = SessionOptions(
            helo=helo,
            mail_from=sender,
            rcpts=rcpts,
            starttls=StartTls(self.starttls),
            implicit_tls=self.implicit_tls,
            cafile=self.cafile,
            quit_after=QuitAfter(self.quit_after) if self.quit_after else None,
            timeouts=self.timeouts(),
            resume_tls=not self.no_tls_resume,
        )
        return ProbeRequest(
            target=Target("", "domain", None, None, None),
            session=opts,
            port=self.port,
            all_hosts=self.all_hosts,
            family=family,
            seed=self.seed,
            nameservers=tuple(nameserver(n) for n in self.nameserver),
            expectations=expectations,
            max_mx=self.max_mx,
            max_addresses=self.max_addresses,
        )


def nameserver(value: str) -> tuple[str, int]:
    """HOST, HOST:PORT, [V6] or [V6]:PORT."""
    host, port = value, "53"
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                refuse("usage.nameserver", value=shown(value))
            port = rest[1:]
    elif value.count(":") == 1:
        host, port = value.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        refuse("usage.nameserver", value=shown(value))
    try:
        return host, parse_port(port)
    except TargetError as e:
        refuse("usage.nameserver_port", value=shown(value), detail=carried(e))


def _timeout(name: str, default: str, help_: str | None = None) -> Callable[[F], F]:
    return click.option(name, type=AsciiDecimal(0.1, 3600), show_default=default, help=help_)


def _cap(name: str, default: int, help_: str) -> Callable[[F], F]:
    return click.option(
        name, type=AsciiInt(1, 10_000), default=default, show_default=True, help=help_
    )


_OPTIONS = [
    click.option("--port", type=AsciiInt(1, 65535), help="SMTP port (default 25; 465 with --tls)."),
    click.option("--tls", "implicit_tls", is_flag=True, help="Implicit TLS (SMTPS, port 465)."),
    click.option(
        "--starttls",
        type=Choice([m.value for m in StartTls]),
        default="auto",
        show_default=True,
        help="auto: when the server offers it, as MTAs do; require: fail without it; never.",
    ),
    click.option("--cafile", type=ExistingFile(), help="Trust this CA bundle too."),
    click.option(
        "--no-tls-resume",
        is_flag=True,
        help="A full TLS handshake every time (by default a server met before in the same run "
        "is offered the TLS session it gave then).",
    ),
    click.option(
        "--helo", help="Name sent in EHLO/HELO (default: this host's FQDN or an address literal)."
    ),
    click.option(
        "--from", "mail_from", default="", help="MAIL FROM address (default: the null sender <>)."
    ),
    click.option("--rcpt", multiple=True, help="RCPT TO address (repeatable)."),
    click.option(
        "--quit-after",
        type=Choice([m.value for m in QuitAfter]),
        help="End with QUIT after this step: the greeting, EHLO, TLS, MAIL or RCPT.",
    ),
    click.option(
        "--timeout",
        type=AsciiDecimal(0.1, 3600),
        help="Set every timeout at once (seconds); the budget becomes 8 times it.",
    ),
    _timeout("--connect-timeout", "10", "Seconds for the connection (and its TLS with --tls)."),
    _timeout("--greeting-timeout", "30", "Seconds to wait for the server's greeting."),
    _timeout("--command-timeout", "30", "Seconds to wait for the reply to each command."),
    _timeout("--dns-timeout", "8", "Seconds for one DNS lookup, retries included."),
    click.option(
        "--budget",
        type=AsciiDecimal(0.1, 36000),
        show_default="120",
        help="Total seconds allowed for the whole target: DNS and every MX host and address.",
    ),
    click.option(
        "--all",
        "all_hosts",
        is_flag=True,
        help="Probe every MX address, not just the first that works.",
    ),
    click.option("-4", "ipv4", is_flag=True, help="IPv4 only."),
    click.option("-6", "ipv6", is_flag=True, help="IPv6 only."),
    click.option(
        "--seed",
        type=AsciiInt(0, 2**64 - 1),
        help="Seed for shuffling MX hosts of equal preference.",
    ),
    click.option(
        "--nameserver", multiple=True, help="Ask this DNS server (HOST[:PORT]; repeatable)."
    ),
    click.option(
        "--expect", multiple=True, help="Expectation for CI, e.g. starttls, tls-trusted, rcpt=2xx."
    ),
    _cap("--max-mx", MAX_MX, "MX hosts looked up and tried, at most, in delivery order."),
    _cap("--max-addresses", MAX_ADDRESSES, "Addresses tried, at most, over all MX hosts."),
]
_NAMES = tuple(f.name for f in fields(LiveArgs))


def live_options(f: F) -> F:
    """Add the shared options; the command receives them as one `LiveArgs` named `live`."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        live = LiveArgs(**{name: kwargs.pop(name) for name in _NAMES})
        return f(*args, live=live, **kwargs)

    command: Any = wrapper
    for option in reversed(_OPTIONS):
        command = option(command)
    return command  # type: ignore[no-any-return]
