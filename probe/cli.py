"""The `smtp-probe` command line: a thin click layer over the pure core and the I/O layers.

Only this module writes to stdout/stderr or exits. Commands that need no network import
nothing from asyncio, ssl, dnspython or aiosmtplib.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, NoReturn

import click

from probe import exitcodes
from probe.text import lang_from_env, normalize_lang

FORMATS = ("text", "json", "jsonl")


def _lang(value: str | None) -> str:
    if value:
        lang = normalize_lang(value)
        if lang is None:
            raise click.BadParameter(
                f"{value!r} is not one of en, zh, de, ko", param_hint="'--lang'"
            )
        return lang
    return lang_from_env(os.environ)


def _colour_enabled(stream: IO[str]) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _styler(enabled: bool) -> Any:
    def style(text: str, colour: str | None = None, bold: bool = False) -> str:
        if not enabled or (colour is None and not bold):
            return text
        return click.style(text, fg=colour, bold=bold)

    return style


def _echo(text: str) -> None:
    click.echo(text, color=True)


def _dump(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2)


def fail(message: str, status: int = exitcodes.USAGE) -> NoReturn:
    """One-line error on stderr and a documented exit status."""
    click.echo(f"smtp-probe: error: {message}", err=True)
    raise SystemExit(status)


lang_option = click.option(
    "--lang",
    metavar="LANG",
    help="Language of explanations: en, zh, de or ko (default: from LC_ALL/LANG, else en).",
)


class _Group(click.Group):
    """A group where `smtp-probe TARGET` is short for `smtp-probe probe TARGET`.

    It also maps click's usage errors to exit status 64 (EX_USAGE) instead of 2.
    """

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo("smtp-probe: interrupted", err=True)
            sys.exit(exitcodes.INTERRUPTED)
        except click.ClickException as e:
            e.show()
            sys.exit(exitcodes.USAGE)
        except KeyboardInterrupt:
            click.echo("smtp-probe: interrupted", err=True)
            sys.exit(exitcodes.INTERRUPTED)
        sys.exit(rv if isinstance(rv, int) else exitcodes.OK)

    def invoke(self, ctx: click.Context) -> Any:
        # Caught here, not in main(): click turns EPIPE into a bare exit status 1 on its way out.
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            if not _stdout_gone():
                click.echo("smtp-probe: I/O error: broken pipe", err=True)
                raise SystemExit(exitcodes.IOERR) from None
            # The reader of our output went away (`| head`): stop quietly, as Unix tools do.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            raise SystemExit(exitcodes.OK) from None

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help", "--version"):
            args = ["probe", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smtp-probe", prog_name="smtp-probe")
def cli() -> None:
    """Probe mail servers live and explain every SMTP reply.

    \b
    Live:     smtp-probe example.com   smtp-probe user@example.com --expect starttls
    Offline:  smtp-probe explain "550 5.1.1 User unknown"   smtp-probe compare 421 521
              smtp-probe codes --class 4   smtp-probe demo
    """


def _read_stream(stream: IO[bytes]) -> Iterator[str]:
    """Lines of a byte stream, decoded leniently, one at a time (constant memory)."""
    for raw in stream:
        yield raw.decode("utf-8", "backslashreplace").rstrip("\r\n")


@cli.command()
@click.argument("items", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option(
    "--summary", is_flag=True, help="With '-': counts by category and code, one example each."
)
@lang_option
def explain(items: tuple[str, ...], fmt: str, summary: bool, lang: str | None) -> None:
    """Explain SMTP replies: codes, reply lines, bounces, MTA log lines, DSN fields.

    ITEM is a code (550, 5.7.26), a reply or a log line. '-' reads standard input line by
    line (a whole mail log): lines without a reply are counted, not shown.
    """
    from probe.catalog import locale
    from probe.interpret import explain as explain_one
    from probe.interpret import interpret_reply
    from probe.model import Interpretation, NotAReply
    from probe.render import explain as render
    from probe.reply import iter_replies

    loc = locale(_lang(lang))
    if summary and "-" not in items:
        fail("--summary needs '-' (standard input) among the items")
    style = _styler(fmt == "text" and _colour_enabled(sys.stdout))
    missing = 0
    found = 0
    collected: list[dict[str, object]] = []
    stats = render.Summary()
    first = True

    def emit(e: Interpretation | NotAReply) -> None:
        nonlocal first
        if summary:
            stats.add(e)
            return
        if fmt == "json":
            collected.append(render.to_json(e, loc))
        elif fmt == "jsonl":
            _echo(json.dumps(render.to_json(e, loc), ensure_ascii=False))
        else:
            if not first:
                _echo("")
            first = False
            _echo(render.to_text(e, loc, style))

    for item in items:
        if item == "-":
            for _line, result in iter_replies(_read_stream(sys.stdin.buffer)):
                if isinstance(result, NotAReply):
                    if summary:
                        stats.add(result)
                    continue
                found += 1
                emit(interpret_reply(result, _line))
            continue
        e = explain_one(item)
        if isinstance(e, NotAReply):
            missing += 1
        else:
            found += 1
        emit(e)

    if summary:
        if fmt == "text":
            _echo(render.summary_text(stats, loc, style))
        else:
            _echo(
                json.dumps(
                    render.summary_json(stats, loc),
                    ensure_ascii=False,
                    indent=2 if fmt == "json" else None,
                )
            )
    elif fmt == "json":
        _echo(_dump(collected))
    if not found:
        click.echo("smtp-probe: no SMTP reply found in the input", err=True)
        raise SystemExit(exitcodes.DATAERR)
    if missing:
        click.echo(f"smtp-probe: {missing} item(s) held no SMTP reply", err=True)
        raise SystemExit(exitcodes.DATAERR)


def _code_item(value: str) -> Any:
    from probe.interpret import interpret_reply
    from probe.reply import parse

    r = parse(value)
    if r is None or r.form.value not in ("code", "enhanced"):
        fail(
            f"{value!r} is not a reply code (give a basic code like 421 or an enhanced code like 5.7.26)"
        )
    return interpret_reply(r, value)


@cli.command()
@click.argument("a")
@click.argument("b")
@click.option(
    "--format", "fmt", type=click.Choice(("text", "json")), default="text", show_default=True
)
@lang_option
def compare(a: str, b: str, fmt: str, lang: str | None) -> None:
    """Compare two codes side by side (421 521, or 5.1.1 5.2.2)."""
    from probe.catalog import locale
    from probe.render import compare as render

    loc = locale(_lang(lang))
    ia, ib = _code_item(a), _code_item(b)
    if fmt == "json":
        _echo(_dump(render.to_json(ia, ib, loc)))
    else:
        _echo(render.to_text(ia, ib, loc, _styler(_colour_enabled(sys.stdout))))


@cli.command()
@click.option(
    "--kind",
    type=click.Choice(("basic", "enhanced", "rules", "all")),
    default="basic",
    show_default=True,
)
@click.option("--class", "klass", type=click.IntRange(2, 5), help="Only codes of this class (2-5).")
@click.option("--category", help="Only entries of this category (see README).")
@click.option(
    "--format", "fmt", type=click.Choice(("text", "json")), default="text", show_default=True
)
@lang_option
def codes(kind: str, klass: int | None, category: str | None, fmt: str, lang: str | None) -> None:
    """List the catalog: basic codes, enhanced codes or provider rules."""
    from probe import catalog
    from probe.model import CATEGORIES
    from probe.render import codes as render

    if category is not None and category not in CATEGORIES:
        fail(f"unknown category {category!r}; one of: {', '.join(CATEGORIES)}")
    loc = catalog.locale(_lang(lang))
    items = render.rows(catalog.load(), loc, kind, klass, category)
    if fmt == "json":
        _echo(_dump(items))
    else:
        _echo(render.to_text(items, _styler(_colour_enabled(sys.stdout))))


def _nameserver(value: str) -> tuple[str, int]:
    """HOST, HOST:PORT, [V6] or [V6]:PORT."""
    import ipaddress

    host, port = value, "53"
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif value.count(":") == 1:
        host, port = value.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        fail(f"--nameserver {value!r}: give an IP address, optionally with :PORT")
    if not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"--nameserver {value!r}: bad port")
    return host, int(port)


_SESSION_OPTIONS = [
    click.option(
        "--port", type=click.IntRange(1, 65535), help="SMTP port (default 25; 465 with --tls)."
    ),
    click.option("--tls", "implicit_tls", is_flag=True, help="Implicit TLS (SMTPS, port 465)."),
    click.option(
        "--starttls",
        type=click.Choice(("auto", "require", "never")),
        default="auto",
        show_default=True,
    ),
    click.option(
        "--cafile", type=click.Path(exists=True, dir_okay=False), help="Trust this CA bundle too."
    ),
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
    click.option("--quit-after", type=click.Choice(("connect", "ehlo", "tls", "mail", "rcpt"))),
    click.option(
        "--timeout", type=click.FloatRange(0.1, 3600), help="Set every timeout at once (seconds)."
    ),
    click.option(
        "--connect-timeout", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True
    ),
    click.option(
        "--greeting-timeout", type=click.FloatRange(0.1, 3600), default=30.0, show_default=True
    ),
    click.option(
        "--command-timeout", type=click.FloatRange(0.1, 3600), default=30.0, show_default=True
    ),
    click.option(
        "--dns-timeout",
        type=click.FloatRange(0.1, 3600),
        default=8.0,
        show_default=True,
        help="Seconds for one DNS lookup, retries included.",
    ),
    click.option(
        "--budget",
        type=click.FloatRange(0.1, 36000),
        default=120.0,
        show_default=True,
        help="Total seconds allowed per address.",
    ),
    click.option(
        "--all",
        "all_hosts",
        is_flag=True,
        help="Probe every MX address, not just the first that works.",
    ),
    click.option("-4", "ipv4", is_flag=True, help="IPv4 only."),
    click.option("-6", "ipv6", is_flag=True, help="IPv6 only."),
    click.option("--seed", type=int, help="Seed for shuffling MX hosts of equal preference."),
    click.option(
        "--nameserver", multiple=True, help="Ask this DNS server (HOST[:PORT]; repeatable)."
    ),
    click.option(
        "--expect", multiple=True, help="Expectation for CI, e.g. starttls, tls-trusted, rcpt=2xx."
    ),
]


def session_options(f: Any) -> Any:
    """The options shared by `probe` and `batch`."""
    for option in reversed(_SESSION_OPTIONS):
        f = option(f)
    return f


def _request_template(kw: dict[str, Any]) -> Any:
    """Validate the shared options into a ProbeRequest template (target filled in later)."""
    from probe.result import Target
    from probe.runner import ProbeRequest
    from probe.session import SessionOptions
    from probe.target import TargetError, check_address, check_helo
    from probe.verdict import parse_expectation

    if kw["ipv4"] and kw["ipv6"]:
        fail("-4 and -6 exclude each other")
    try:
        helo_v = check_helo(kw["helo"]) if kw["helo"] is not None else None
        from_v = check_address(kw["mail_from"], "--from")
        rcpts = tuple(check_address(r, "--rcpt") for r in kw["rcpt"])
        expectations = tuple(parse_expectation(e) for e in kw["expect"])
    except (TargetError, ValueError) as e:
        fail(str(e))
    servers = tuple(_nameserver(n) for n in kw["nameserver"])
    connect_t, greeting_t, command_t, dns_t, budget = (
        kw["connect_timeout"],
        kw["greeting_timeout"],
        kw["command_timeout"],
        kw["dns_timeout"],
        kw["budget"],
    )
    if kw["timeout"] is not None:
        connect_t = greeting_t = command_t = dns_t = kw["timeout"]
        if budget == 120.0:
            budget = kw["timeout"] * 8
    opts = SessionOptions(
        helo=helo_v,
        mail_from=from_v,
        rcpts=rcpts,
        starttls=kw["starttls"],
        implicit_tls=kw["implicit_tls"],
        cafile=kw["cafile"],
        quit_after=kw["quit_after"],
        connect_timeout=connect_t,
        greeting_timeout=greeting_t,
        command_timeout=command_t,
        budget=budget,
        resume_tls=not kw["no_tls_resume"],
    )
    return ProbeRequest(
        target=Target("", "domain", None, None, None),
        session=opts,
        port=kw["port"],
        all_hosts=kw["all_hosts"],
        family=4 if kw["ipv4"] else 6 if kw["ipv6"] else None,
        seed=kw["seed"],
        nameservers=servers,
        dns_timeout=dns_t,
        expectations=expectations,
    )


@cli.command()
@click.argument("target")
@click.option(
    "--host", "host_mode", is_flag=True, help="TARGET is a host to connect to: no MX lookup."
)
@session_options
@click.option(
    "--format", "fmt", type=click.Choice(("text", "json")), default="text", show_default=True
)
@click.option("--redact", is_flag=True, help="Mask local parts and IP addresses in the output.")
@lang_option
def probe(
    target: str, host_mode: bool, fmt: str, redact: bool, lang: str | None, **kw: Any
) -> None:
    """Probe TARGET live: a domain, user@domain, a host (--host), [IP] or host:port."""
    from dataclasses import replace

    from probe.target import TargetError, parse_target

    loc_lang = _lang(lang)
    template = _request_template(kw)
    try:
        t = parse_target(target, host_mode=host_mode)
    except TargetError as e:
        fail(str(e))

    from probe import aio
    from probe.catalog import locale
    from probe.render import probe as render
    from probe.runner import probe as run_probe
    from probe.text import redact as mask
    from probe.text import redact_json
    from probe.verdict import exit_status

    result = aio.run(run_probe(replace(template, target=t)))
    loc = locale(loc_lang)
    if fmt == "json":
        doc = render.to_json(result, loc)
        _echo(_dump(redact_json(doc) if redact else doc))
    else:
        text = render.to_text(result, loc, _styler(_colour_enabled(sys.stdout)))
        _echo(mask(text) if redact else text)
    raise SystemExit(exit_status(result.verdict))


@cli.command()
@click.argument("source", default="-")
@session_options
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
    "connection, as an MTA's connection cache does); 1 opens a new connection for each.",
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
    **kw: Any,
) -> None:
    """Probe many targets, one a line (FILE or '-'), streaming JSON Lines in completion order."""
    if resume and not output:
        fail("--resume needs --output FILE")
    template = _request_template(kw)
    loc_lang = _lang(lang)

    from probe.batch import Stats, fd_lines, read_targets, recorded_lines

    done = recorded_lines(output) if (output and resume) else set()
    if output and resume:
        _drop_torn_tail(output)
    fd: int | None = None
    lines: Iterable[str]
    if source == "-":
        try:
            lines = fd_lines(sys.stdin.fileno())
        except (AttributeError, OSError, ValueError):  # no descriptor (an embedding host)
            lines = (line.rstrip("\n") for line in sys.stdin)
    else:
        try:
            fd = os.open(source, os.O_RDONLY)
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                os.close(fd)
                fail(f"cannot read {source}: it is a directory")
        except OSError as e:
            fail(f"cannot read {source}: {e.strerror}")
        lines = fd_lines(fd)
    sink: IO[str] = open(output, "a", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    progress: _Progress | None = None
    items = ((n, text) for n, text in read_targets(lines) if n not in done)

    def write(line: str) -> None:
        # One whole line per write, flushed: an interrupted run leaves only complete records.
        sink.write(line)
        sink.flush()

    stats = Stats()
    pool: list[Any] = []
    try:
        if workers > 1:
            from probe.catalog import locale
            from probe.workers import plan, spawn

            locale(loc_lang)  # loaded here, once, for forked workers to inherit
            # Before any thread starts (the progress bar has one): workers may be forked.
            pool = spawn(plan(workers, concurrency, per_host))
        if sys.stderr.isatty():
            progress = _Progress()
        if pool:
            from probe.workers import WorkerConfig, run_workers

            def on_record(line: str, rec: dict[str, Any]) -> None:
                write(line)
                stats.add(rec)
                if progress:
                    progress.update(stats)

            cfg = WorkerConfig(template, loc_lang, concurrency, per_host, rate, reuse)
            run_workers(items, cfg, pool, on_record)
        else:
            from probe import aio
            from probe.batch import run_batch, stream_targets
            from probe.catalog import locale

            stats = aio.run(
                run_batch(
                    stream_targets(items),
                    template,
                    lambda rec: write(json.dumps(rec, ensure_ascii=False) + "\n"),
                    locale(loc_lang),
                    concurrency=concurrency,
                    per_host=per_host,
                    rate=rate,
                    reuse=reuse,
                    on_progress=progress.update if progress else None,
                )
            )
    except KeyboardInterrupt:
        click.echo(
            "smtp-probe: interrupted; every record written is complete"
            + (" (rerun with --resume)" if output else ""),
            err=True,
        )
        raise SystemExit(exitcodes.INTERRUPTED) from None
    except BrokenPipeError:
        raise  # the reader of our output went away: handled once, in invoke()
    except OSError as e:
        # Reading the input or writing --output failed (a disk full, a read error).
        click.echo(f"smtp-probe: I/O error: {e.strerror or e}", err=True)
        raise SystemExit(exitcodes.IOERR) from None
    finally:
        for w in pool:
            w.close()
        if progress:
            progress.close()
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if output:
            sink.close()
    verdicts = ", ".join(f"{k} {v}" for k, v in stats.by_verdict.most_common())
    cats = ", ".join(f"{k} {v}" for k, v in stats.by_category.most_common())
    elapsed = time.monotonic() - stats.started
    kept = (
        f"; {stats.reused} of {stats.sessions} sessions on kept connections" if stats.reused else ""
    )
    click.echo(
        f"smtp-probe: {stats.done} records in {elapsed:.1f} s; verdicts: {verdicts or '-'}; "
        f"categories: {cats or '-'}{kept}",
        err=True,
    )


def _stdout_gone() -> bool:
    """Whether standard output is a pipe or socket whose reader has gone (POLLERR)."""
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


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

    def update(self, stats: Any) -> None:
        rate = stats.done / max(time.monotonic() - stats.started, 1e-6)
        self._p.update(
            self._task, description=f"{stats.done} done, {stats.errors} errors, {rate:.1f}/s"
        )

    def close(self) -> None:
        self._p.stop()


@cli.command()
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
    from probe.target import TargetError, check_helo, to_ascii_domain

    loc_lang = _lang(lang)
    if ipv4 and ipv6:
        fail("-4 and -6 exclude each other")
    try:
        name = to_ascii_domain(domain)
        helo_v = check_helo(helo) if helo else None
    except TargetError as e:
        fail(str(e))
    servers = tuple(_nameserver(n) for n in nameserver)

    from probe import aio
    from probe.catalog import locale
    from probe.checks import Severity, check
    from probe.mxscan import scan
    from probe.render import mx as render
    from probe.resolve import make_resolver
    from probe.session import SessionOptions

    opts = SessionOptions(
        helo=helo_v,
        quit_after="tls",
        cafile=cafile,
        connect_timeout=timeout,
        greeting_timeout=timeout,
        command_timeout=timeout,
        budget=timeout * 6,
    )

    async def run() -> object:
        res = make_resolver(servers or None, lifetime=timeout)
        return await scan(
            res,
            name,
            connect=connect,
            port=port,
            opts=opts,
            family=4 if ipv4 else 6 if ipv6 else None,
            allow_private=allow_private,
            https_port=https_port,
            cafile=cafile,
        )

    facts = aio.run(run())
    from probe.checks import DomainFacts

    assert isinstance(facts, DomainFacts)
    findings = check(facts)
    threshold = Severity.WARNING if fail_on == "warning" else Severity.ERROR
    if any(f.id == "domain-nxdomain" for f in findings):
        status = exitcodes.NOHOST
    elif any(f.severity >= threshold for f in findings):
        status = exitcodes.UNAVAILABLE
    else:
        status = exitcodes.OK
    loc = locale(loc_lang)
    if fmt == "json":
        _echo(_dump(render.to_json(facts, findings, loc, status)))
    else:
        _echo(render.to_text(facts, findings, loc, _styler(_colour_enabled(sys.stdout))))
    raise SystemExit(status)


@cli.command()
@lang_option
def demo(lang: str | None) -> None:
    """Probe mail servers started on 127.0.0.1 just for this: no network needed."""
    from probe import aio
    from probe.catalog import locale
    from probe.demo import run_demo
    from probe.render import probe as render
    from probe.verdict import exit_status

    loc = locale(_lang(lang))
    style = _styler(_colour_enabled(sys.stdout))
    results = aio.run(run_demo())
    ok = True
    for n, (sc, cmd, result) in enumerate(results, 1):
        _echo(style(f"## {n}. {sc.title}", None, True))
        _echo(f"$ {cmd}")
        _echo(render.to_text(result, loc, style))
        _echo("")
        ok = ok and result.verdict is sc.expected
    _echo(style("## Summary", None, True))
    for n, (sc, _cmd, result) in enumerate(results, 1):
        status = exit_status(result.verdict)
        _echo(
            f"  {n}. {sc.target:<24} {loc.ui(f'verdict.{result.verdict.value}'):<28} exit {status}"
        )
    raise SystemExit(exitcodes.OK if ok else exitcodes.UNAVAILABLE)


def main() -> None:
    """Console entry point."""
    cli()
