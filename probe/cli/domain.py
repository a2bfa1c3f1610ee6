"""`smtp-probe mx`: a domain's mail setup checked, findings a mail admin can act on."""

from __future__ import annotations

import click

from probe import aio, exitcodes
from probe.catalog import locale
from probe.checks import Finding, Severity
from probe.cli.common import (
    REPORT_FORMATS,
    AsciiDecimal,
    AsciiInt,
    Choice,
    ExistingFile,
    dump,
    echo,
    fail,
    format_option,
    lang_option,
    redact_option,
    refuse,
    resolve_lang,
    stdout_styler,
)
from probe.cli.helptext import Command
from probe.cli.options import nameserver as parse_nameserver
from probe.config import QuitAfter, SessionOptions, Timeouts
from probe.messages import carried
from probe.mxscan import scan
from probe.redact import Redactor
from probe.render import mx as mx_render
from probe.resolve import make_resolver
from probe.sender import assess
from probe.target import TargetError, check_helo, to_ascii_domain


@click.command(cls=Command)
@click.argument("domain")
@click.option(
    "--connect/--no-connect",
    default=True,
    show_default=True,
    help="Also connect to every MX address (STARTTLS, certificate, greeting).",
)
@click.option(
    "--port",
    type=AsciiInt(1, 65535),
    default=25,
    show_default=True,
    help="SMTP port to connect to on each MX address.",
)
@click.option(
    "--timeout",
    type=AsciiDecimal(0.1, 3600),
    default=10.0,
    show_default=True,
    help="Seconds for each wait (a DNS lookup, a connection, a reply); a session may take 8 "
    "times it.",
)
@click.option("-4", "ipv4", is_flag=True, help="IPv4 only.")
@click.option("-6", "ipv6", is_flag=True, help="IPv6 only.")
@click.option("--nameserver", multiple=True, help="Ask this DNS server (HOST[:PORT]; repeatable).")
@click.option(
    "--allow-private", is_flag=True, help="Private and loopback MX addresses are fine (test labs)."
)
@click.option(
    "--fail-on",
    type=Choice(("error", "warning")),
    default="error",
    show_default=True,
    help="Exit 69 on a finding of this severity or worse.",
)
@click.option("--cafile", type=ExistingFile(), help="Trust this CA bundle too.")
@click.option("--helo", help="Name sent in EHLO (default: this host's FQDN or an address literal).")
@click.option(
    "--tls-scan",
    is_flag=True,
    help="Deeper TLS facts per address: the TLS versions accepted, MAIL before STARTTLS, the "
    "key exchange; five more connections to each address that offers STARTTLS.",
)
@click.option("--https-port", type=AsciiInt(1, 65535), default=443, hidden=True)
@format_option
@redact_option
@lang_option
def mx(
    domain: str,
    connect: bool,
    port: int,
    timeout: float,
    ipv4: bool,
    ipv6: bool,
    nameserver: tuple[str, ...],
    allow_private: bool,
    fail_on: str,
    cafile: str | None,
    helo: str | None,
    tls_scan: bool,
    https_port: int,
    fmt: str,
    redact: bool,
    lang: str | None,
) -> None:
    """Check a domain's mail setup: MX, DNS, reverse DNS, SPF, DMARC, MTA-STS, TLS, DANE."""
    loc = locale(resolve_lang(lang))
    if ipv4 and ipv6:
        refuse("usage.exclusive_46")
    if tls_scan and not connect:
        refuse("usage.tls_scan_needs_connect")
    try:
        name = to_ascii_domain(domain)
        helo_v = check_helo(helo) if helo else None
    except TargetError as e:
        fail(carried(e))
    timeouts = Timeouts(timeout)
    opts = SessionOptions(helo=helo_v, quit_after=QuitAfter.TLS, cafile=cafile, timeouts=timeouts)
    facts = aio.run(
        scan(
            make_resolver([parse_nameserver(n) for n in nameserver] or None, lifetime=timeouts.dns),
            name,
            connect=connect,
            port=port,
            opts=opts,
            family=4 if ipv4 else 6 if ipv6 else None,
            allow_private=allow_private,
            https_port=https_port,
            cafile=cafile,
            tls_scan=tls_scan,
        )
    )
    findings, verdicts = assess(facts)
    status = _mx_status(findings, fail_on)
    mask = Redactor([name]) if redact else None
    if fmt == "json":
        doc = mx_render.to_json(facts, findings, loc, status, verdicts)
        echo(dump(mask.json(doc) if mask else doc))
    elif fmt in REPORT_FORMATS:
        from probe.cli.report import mx_report

        text = mx_report(fmt, facts, findings, loc, status, fail_on, verdicts)
        echo(mask.text(text) if mask else text)
    else:
        text = mx_render.to_text(facts, findings, loc, stdout_styler(), verdicts)
        echo(mask.text(text) if mask else text)
    raise SystemExit(status)


def _mx_status(findings: list[Finding], fail_on: str) -> int:
    threshold = Severity.WARNING if fail_on == "warning" else Severity.ERROR
    if any(f.id == "domain-nxdomain" for f in findings):
        return exitcodes.NOHOST
    if any(f.severity >= threshold for f in findings):
        return exitcodes.UNAVAILABLE
    return exitcodes.OK
