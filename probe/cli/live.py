"""Commands that talk to servers: probe, batch, mx, demo.

This module is the one boundary where the CLI loads the network stack; the group imports it
only when one of these commands runs (`probe.cli.COMMANDS`).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import IO, Any

import click

from probe import aio, exitcodes
from probe.batch import Stats, fd_lines, read_targets, recorded_lines, run_batch, stream_targets
from probe.catalog import Locale, locale
from probe.checks import DomainFacts, Severity, check
from probe.cli.common import (
    dump,
    echo,
    fail,
    lang_option,
    resolve_lang,
    stdout_styler,
)
from probe.cli.options import LiveArgs, live_options
from probe.cli.options import nameserver as parse_nameserver
from probe.config import BatchLimits, ProbeRequest, QuitAfter, SessionOptions, Timeouts
from probe.demo import run_demo
from probe.mxscan import scan
from probe.render import Styler
from probe.render import mx as mx_render
from probe.render import probe as probe_render
from probe.resolve import make_resolver
from probe.result import DnsResult, ProbeResult, Session, Step, TlsInfo
from probe.runner import probe as run_probe
from probe.session import RunContext
from probe.target import TargetError, check_helo, parse_target, to_ascii_domain
from probe.text import redact as mask_text
from probe.text import redact_json
from probe.verdict import exit_status
from probe.workers import WorkerConfig, plan, run_workers, spawn


class LiveView:
    """The transcript on a terminal, each exchange printed the moment its reply arrives."""

    def __init__(self, loc: Locale, style: Styler, req: ProbeRequest, mask: bool) -> None:
        self.transcript = probe_render.Transcript(loc, style)
        self.implicit = req.session.implicit_tls
        self.kind = req.target.kind
        self.mask = mask

    def _print(self, lines: list[str]) -> None:
        for line in lines:
            echo(mask_text(line) if self.mask else line)

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


@click.command(name="probe")
@click.argument("target")
@click.option(
    "--host", "host_mode", is_flag=True, help="TARGET is a host to connect to: no MX lookup."
)
@live_options
@click.option(
    "--format", "fmt", type=click.Choice(("text", "json")), default="text", show_default=True
)
@click.option("--redact", is_flag=True, help="Mask local parts and IP addresses in the output.")
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
        fail(str(e))
    req = replace(template, target=t)
    style = stdout_styler()
    view = None
    if fmt == "text" and _terminal(sys.stdout):
        view = LiveView(loc, style, req, redact)
    result = aio.run(run_probe(req, run=RunContext(observer=view)))
    if view is not None:
        view.finish(result)
    elif fmt == "json":
        doc = probe_render.to_json(result, loc)
        echo(dump(redact_json(doc) if redact else doc))
    else:
        text = probe_render.to_text(result, loc, style)
        echo(mask_text(text) if redact else text)
    raise SystemExit(exit_status(result.verdict))


def _terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _open_input(source: str) -> tuple[Iterable[str], int | None]:
    """The lines of FILE or '-', and the descriptor to close afterwards (if ours)."""
    if source == "-":
        try:
            return fd_lines(sys.stdin.fileno()), None
        except (AttributeError, OSError, ValueError):  # no descriptor (an embedding host)
            return (line.rstrip("\n") for line in sys.stdin), None
    try:
        fd = os.open(source, os.O_RDONLY)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            fail(f"cannot read {source}: it is a directory")
    except OSError as e:
        fail(f"cannot read {source}: {e.strerror}")
    return fd_lines(fd), fd


def _drop_torn_tail(path: str) -> None:
    """An interrupted write can leave half a line at the end; cut it before appending."""
    try:
        with open(path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
    except FileNotFoundError:
        pass


class _Progress:
    """A progress line on a terminal's stderr (rich is imported only when one is there)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._p = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = self._p.add_task("starting")
        self._p.start()

    def update(self, stats: Stats) -> None:
        rate = stats.done / max(time.monotonic() - stats.started, 1e-6)
        self._p.update(
            self._task, description=f"{stats.done} done, {stats.errors} errors, {rate:.1f}/s"
        )

    def close(self) -> None:
        self._p.stop()


class _BatchRun:
    """One `batch` invocation: input, sink, progress, and the engine (in-process or workers)."""

    def __init__(self, template: ProbeRequest, lang: str, limits: BatchLimits) -> None:
        self.template, self.lang, self.limits = template, lang, limits
        self.stats = Stats()
        self.progress: _Progress | None = None
        self.sink: IO[str] = sys.stdout

    def write(self, line: str) -> None:
        # One whole line per write, flushed: an interrupted run leaves only complete records.
        self.sink.write(line)
        self.sink.flush()

    def run(self, items: Iterator[tuple[int, str]], workers: int) -> None:
        pool = []
        try:
            if workers > 1:
                locale(self.lang)  # loaded here, once, for forked workers to inherit
                # Before any thread starts (the progress bar has one): workers may be forked.
                limits = self.limits
                pool = spawn(plan(workers, limits.concurrency, limits.per_host))
            if sys.stderr.isatty():
                self.progress = _Progress()
            if pool:
                cfg = WorkerConfig(self.template, self.lang, self.limits)
                run_workers(items, cfg, pool, self._on_record)
            else:
                self._in_process(items)
        finally:
            for w in pool:
                w.close()
            if self.progress:
                self.progress.close()

    def _on_record(self, line: str, rec: dict[str, Any]) -> None:
        self.write(line)
        self.stats.add(rec)
        if self.progress:
            self.progress.update(self.stats)

    def _in_process(self, items: Iterator[tuple[int, str]]) -> None:
        progress: Callable[[Stats], None] | None = self.progress.update if self.progress else None
        self.stats = aio.run(
            run_batch(
                stream_targets(items),
                self.template,
                lambda rec: self.write(json.dumps(rec, ensure_ascii=False) + "\n"),
                locale(self.lang),
                limits=self.limits,
                on_progress=progress,
            )
        )

    def summary(self) -> str:
        stats = self.stats
        verdicts = ", ".join(f"{k} {v}" for k, v in stats.by_verdict.most_common())
        cats = ", ".join(f"{k} {v}" for k, v in stats.by_category.most_common())
        elapsed = time.monotonic() - stats.started
        kept = (
            f"; {stats.reused} of {stats.sessions} sessions on kept connections"
            if stats.reused
            else ""
        )
        return (
            f"smtp-probe: {stats.done} records in {elapsed:.1f} s; verdicts: {verdicts or '-'}; "
            f"categories: {cats or '-'}{kept}"
        )


@click.command()
@click.argument("source", default="-")
@live_options
@click.option(
    "--concurrency",
    type=click.IntRange(1, 10000),
    default=20,
    show_default=True,
    help="Sessions at once, overall.",
)
@click.option(
    "--per-host",
    type=click.IntRange(1, 1000),
    default=2,
    show_default=True,
    help="Sessions at once to one MX address.",
)
@click.option(
    "--rate", type=click.FloatRange(0.01, 100000), help="Targets started per second at most."
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes to spread the targets over (for more than one core); the limits above "
    "are shared out among them.",
)
@click.option(
    "--reuse",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Targets one connection may serve, one after another (MAIL, RCPT, RSET on a kept "
    "connection, as an MTA's connection cache does); 1 opens a new connection for each. "
    "A connection that has drawn several rejections is retired early: servers slow down "
    "clients that collect errors.",
)
@click.option("--output", type=click.Path(dir_okay=False), help="Append JSON Lines to this file.")
@click.option("--resume", is_flag=True, help="With --output: skip inputs already recorded there.")
@lang_option
def batch(
    source: str,
    concurrency: int,
    per_host: int,
    rate: float | None,
    workers: int,
    reuse: int,
    output: str | None,
    resume: bool,
    lang: str | None,
    live: LiveArgs,
) -> None:
    """Probe many targets, one a line (FILE or '-'), streaming JSON Lines in completion order."""
    if resume and not output:
        fail("--resume needs --output FILE")
    limits = BatchLimits(concurrency, per_host, rate, reuse)
    job = _BatchRun(live.request(), resolve_lang(lang), limits)
    done = recorded_lines(output) if (output and resume) else set()
    if output and resume:
        _drop_torn_tail(output)
    lines, fd = _open_input(source)
    items = ((n, text) for n, text in read_targets(lines) if n not in done)
    try:
        job.sink = open(output, "a", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
        job.run(items, workers)
    except KeyboardInterrupt:
        again = " (rerun with --resume)" if output else ""
        click.echo(f"smtp-probe: interrupted; every record written is complete{again}", err=True)
        raise SystemExit(exitcodes.INTERRUPTED) from None
    except BrokenPipeError:
        raise  # the reader of our output went away: handled once, in the group
    except OSError as e:
        # Reading the input or writing --output failed (a disk full, a read error).
        click.echo(f"smtp-probe: I/O error: {e.strerror or e}", err=True)
        raise SystemExit(exitcodes.IOERR) from None
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if output and job.sink is not sys.stdout:
            job.sink.close()
    click.echo(job.summary(), err=True)


@click.command()
@click.argument("domain")
@click.option(
    "--connect/--no-connect",
    default=True,
    show_default=True,
    help="Also connect to every MX address (STARTTLS, certificate, greeting).",
)
@click.option("--port", type=click.IntRange(1, 65535), default=25, show_default=True)
@click.option("--timeout", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True)
@click.option("-4", "ipv4", is_flag=True, help="IPv4 only.")
@click.option("-6", "ipv6", is_flag=True, help="IPv6 only.")
@click.option("--nameserver", multiple=True, help="Ask this DNS server (HOST[:PORT]; repeatable).")
@click.option(
    "--allow-private", is_flag=True, help="Private and loopback MX addresses are fine (test labs)."
)
@click.option(
    "--fail-on", type=click.Choice(("error", "warning")), default="error", show_default=True
)
@click.option(
    "--cafile", type=click.Path(exists=True, dir_okay=False), help="Trust this CA bundle too."
)
@click.option("--helo", help="Name sent in EHLO (default: this host's FQDN or an address literal).")
@click.option("--https-port", type=click.IntRange(1, 65535), default=443, hidden=True)
@click.option(
    "--format", "fmt", type=click.Choice(("text", "json")), default="text", show_default=True
)
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
    https_port: int,
    fmt: str,
    lang: str | None,
) -> None:
    """Check a domain's mail setup: MX, DNS, reverse DNS, SPF, DMARC, MTA-STS, TLS, DANE."""
    loc = locale(resolve_lang(lang))
    if ipv4 and ipv6:
        fail("-4 and -6 exclude each other")
    try:
        name = to_ascii_domain(domain)
        helo_v = check_helo(helo) if helo else None
    except TargetError as e:
        fail(str(e))
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
        )
    )
    status = _mx_status(facts, fail_on)
    if fmt == "json":
        echo(dump(mx_render.to_json(facts, check(facts), loc, status)))
    else:
        echo(mx_render.to_text(facts, check(facts), loc, stdout_styler()))
    raise SystemExit(status)


def _mx_status(facts: DomainFacts, fail_on: str) -> int:
    findings = check(facts)
    threshold = Severity.WARNING if fail_on == "warning" else Severity.ERROR
    if any(f.id == "domain-nxdomain" for f in findings):
        return exitcodes.NOHOST
    if any(f.severity >= threshold for f in findings):
        return exitcodes.UNAVAILABLE
    return exitcodes.OK


@click.command()
@lang_option
def demo(lang: str | None) -> None:
    """Probe mail servers started on 127.0.0.1 just for this: no network needed."""
    loc = locale(resolve_lang(lang))
    style = stdout_styler()
    results = aio.run(run_demo())
    ok = True
    for n, (sc, cmd, result) in enumerate(results, 1):
        echo(style(f"## {n}. {sc.title}", None, True))
        echo(f"$ {cmd}")
        echo(probe_render.to_text(result, loc, style))
        echo("")
        ok = ok and result.verdict is sc.expected
    echo(style("## Summary", None, True))
    for n, (sc, _cmd, result) in enumerate(results, 1):
        status = exit_status(result.verdict)
        verdict = loc.ui(f"verdict.{result.verdict.value}")
        echo(f"  {n}. {sc.target:<24} {verdict:<28} exit {status}")
    raise SystemExit(exitcodes.OK if ok else exitcodes.UNAVAILABLE)
