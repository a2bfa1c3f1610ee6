"""`smtp-probe probe`: one target, its transcript shown as the replies arrive.

The live commands each have a module of their own (`live`, `bulk`, `domain`, `demo`), loaded
by name when the command runs (`probe.cli.COMMANDS`): that is where the CLI meets the network
stack, and a command loads only the part of it that it uses.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import IO

import click

from probe import aio
from probe.catalog import Locale, locale
from probe.cli.common import (
    REPORT_FORMATS,
    dump,
    echo,
    fail,
    format_option,
    lang_option,
    redact_option,
    resolve_lang,
    stdout_styler,
)
from probe.cli.helptext import Command
from probe.cli.options import LiveArgs, live_options
from probe.config import ProbeRequest
from probe.context import RunContext
from probe.messages import carried
from probe.redact import Redactor
from probe.render import Styler
from probe.render import probe as probe_render
from probe.result import DnsResult, ProbeResult, Session, Step, Target, TlsInfo
from probe.runner import probe as run_probe
from probe.target import TargetError, parse_target
from probe.verdict import exit_status


class LiveView:
    """The transcript on a terminal, each exchange printed the moment its reply arrives."""

    def __init__(
        self, loc: Locale, style: Styler, req: ProbeRequest, mask: Redactor | None
    ) -> None:
        self.transcript = probe_render.Transcript(loc, style)
        self.implicit = req.session.implicit_tls
        self.kind = req.target.kind
        self.mask = mask

    def _print(self, lines: list[str]) -> None:
        for line in lines:
            echo(self.mask.text(line) if self.mask else line)

    def resolved(self, dns: DnsResult) -> None:
        self._print(self.transcript.dns(dns, self.kind))

    def session_started(self, host: str, address: str, port: int) -> None:
        self._print(self.transcript.start(host, address, port, self.implicit))

    def tls(self, info: TlsInfo) -> None:
        self.transcript.tls(info)

    def step(self, step: Step) -> None:
        self._print(self.transcript.step(step))

    def session_ended(self, session: Session) -> None:
        self._print(self.transcript.end(session))

    def finish(self, result: ProbeResult) -> None:
        self._print(self.transcript.verdict(result))


@click.command(name="probe", cls=Command)
@click.argument("target")
@click.option(
    "--host", "host_mode", is_flag=True, help="TARGET is a host to connect to: no MX lookup."
)
@live_options
@format_option
@redact_option
@lang_option
def probe_command(
    target: str, host_mode: bool, fmt: str, redact: bool, lang: str | None, live: LiveArgs
) -> None:
    """Probe TARGET live: a domain, user@domain, a host (--host), [IP] or host:port."""
    loc = locale(resolve_lang(lang))
    template = live.request()
    try:
        t = parse_target(target, host_mode=host_mode)
    except TargetError as e:
        fail(carried(e))
    req = replace(template, target=t)
    style = stdout_styler()
    mask = redactor_for(t) if redact else None
    view = None
    if fmt == "text" and _terminal(sys.stdout):
        view = LiveView(loc, style, req, mask)
    result = aio.run(run_probe(req, run=RunContext(observer=view)))
    if view is not None:
        view.finish(result)
    elif fmt == "json":
        doc = probe_render.to_json(result, loc)
        echo(dump(mask.json(doc) if mask else doc))
    elif fmt in REPORT_FORMATS:
        from probe.cli.report import probe_report

        text = probe_report(fmt, result, loc)
        echo(mask.text(text) if mask else text)
    else:
        text = probe_render.to_text(result, loc, style)
        echo(mask.text(text) if mask else text)
    raise SystemExit(exit_status(result.verdict))


def redactor_for(t: Target) -> Redactor:
    """Placeholders for one output; the target's own names are the user's to hide."""
    return Redactor([] if t.kind == "literal" else [t.domain or t.host or ""])


def _terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
