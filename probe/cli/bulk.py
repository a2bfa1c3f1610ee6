"""`smtp-probe batch`: many targets, one JSON record each, in completion order."""

from __future__ import annotations

import codecs
import contextlib
import ipaddress
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, BinaryIO, cast

import click

from probe import aio, exitcodes
from probe.batch import Record, Scale, Stats, run_batch
from probe.batchinput import (
    Item,
    OutputFileError,
    Refused,
    drop_torn_tail,
    input_lines,
    read_targets,
    recorded_lines,
    stream_targets,
    torn_tail,
)
from probe.catalog import Locale, locale
from probe.cli.common import (
    REPORT_FORMATS,
    AsciiDecimal,
    AsciiInt,
    Choice,
    fail,
    io_failed,
    lang_option,
    redact_option,
    resolve_lang,
    say,
)
from probe.cli.helptext import Command
from probe.cli.options import LiveArgs, live_options
from probe.cli.report import JsonLines, RecordFormat, batch_format
from probe.cli.usage import notice, os_reason
from probe.config import BatchLimits, ProbeRequest
from probe.messages import carried, msg, said_in
from probe.mxcache import DEFAULT_MAX_AGE, CacheFileError, MxStore
from probe.redact import Redactor
from probe.shard import ShardError, parse_shard
from probe.text import to_json_bytes
from probe.workers import WorkerConfig, plan, run_workers, spawn


def _open_input(source: str) -> tuple[Iterable[str | Refused], int | None]:
    """The lines of FILE or '-', and the descriptor to close afterwards (if ours)."""
    if source == "-":
        try:
            return input_lines(sys.stdin.fileno()), None
        except (AttributeError, OSError, ValueError):  # no descriptor (an embedding host)
            return (line.rstrip("\n") for line in sys.stdin), None
    try:
        fd = os.open(source, os.O_RDONLY)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            fail(msg("usage.cannot_read", path=source, reason=msg("usage.is_a_directory")))
    except OSError as e:
        fail(msg("usage.cannot_read", path=source, reason=os_reason(e)))
    return input_lines(fd), fd


def _prepare_output(path: str, resume: bool) -> set[int]:
    """Input lines already recorded in --output (with --resume), and a clean end to append to.

    With --resume a torn last line is cut, so that its target is probed again; without, it
    is kept (it is the user's data) and reported, and the new records start on a line of
    their own instead of being glued to it.
    """
    if resume:
        try:
            done = recorded_lines(path)
            drop_torn_tail(path)
        except OutputFileError as e:
            fail(carried(e))
        return done
    if torn_tail(path) is not None:
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n")
        say(notice(msg("batch.torn_output", path=path)))
    return set()


class _Progress:
    """A progress line on a terminal's stderr (rich is imported only when one is there)."""

    def __init__(self, loc: Locale) -> None:
        self.loc = loc
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._p = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = self._p.add_task(said_in(self.loc, msg("batch.starting")))
        self._p.start()

    def update(self, stats: Stats) -> None:
        rate = stats.done / max(time.monotonic() - stats.started, 1e-6)
        line = msg("batch.progress", done=stats.done, errors=stats.errors, rate=rate)
        self._p.update(self._task, description=said_in(self.loc, line))

    def close(self) -> None:
        self._p.stop()


def _word(loc: Locale, path: str, key: str) -> str:
    """A verdict's or category's name; the id itself for one the catalog does not know."""
    word = loc.ui(path)
    return key if word == path else word


class _BatchRun:
    """One `batch` invocation: input, sink, progress, and the engine (in-process or workers)."""

    def __init__(
        self, template: ProbeRequest, lang: str, limits: BatchLimits, scale: Scale
    ) -> None:
        self.template, self.lang, self.limits, self.scale = template, lang, limits, scale
        self.ray: str | None = None  # --ray: "" for a local Ray, else the cluster's address
        self.stats = Stats()
        self.progress: _Progress | None = None
        self.sink: IO[str] = sys.stdout
        self.format: RecordFormat = JsonLines()
        # One for the whole run: a host or address keeps its placeholder from record to record.
        self.redactor: Redactor | None = None

    def write(self, line: str) -> None:
        # One whole line per write, flushed: an interrupted run leaves only complete records.
        if line:
            self.sink.write(line)
            self.sink.flush()

    def _emitter(self) -> Callable[[Record], None]:
        """How each record is written. Plain JSON Lines into a UTF-8 sink go out as bytes, as
        orjson made them: decoding 10 KB to text only to encode it back was a visible part
        of a batch's CPU per target. (Every write flushes, so the text layer holds nothing.)"""
        raw = self._bytes_sink()
        if raw is None:
            return lambda rec: self.write(self._render(rec))

        def emit(rec: Record) -> None:
            raw.write(to_json_bytes(rec, newline=True))
            raw.flush()

        return emit

    def _bytes_sink(self) -> BinaryIO | None:
        if self.redactor is not None or not isinstance(self.format, JsonLines):
            return None
        raw = getattr(self.sink, "buffer", None)
        try:
            utf8 = codecs.lookup(getattr(self.sink, "encoding", None) or "").name == "utf-8"
        except LookupError:
            utf8 = False
        return cast(BinaryIO, raw) if raw is not None and utf8 else None

    def run(self, items: Iterator[Item], workers: int) -> None:
        if self.ray is not None:
            self._on_ray(items, workers)
            return
        pool = []
        try:
            if workers > 1:
                # Before any thread starts (the progress bar has one): workers may be forked.
                limits = self.limits
                pool = spawn(
                    plan(workers, limits.concurrency, limits.per_host, limits.per_provider)
                )
            if sys.stderr.isatty():
                self.progress = _Progress(locale(self.lang))
            if pool:
                cfg = WorkerConfig(self.template, self.lang, self.limits, self.scale)
                run_workers(items, cfg, pool, self._on_record)
            else:
                self._in_process(items)
        finally:
            for w in pool:
                w.close()
            if self.progress:
                self.progress.close()

    def _on_ray(self, items: Iterator[Item], workers: int) -> None:
        from probe.cluster import RayConfig, RayMissing, run_on_ray

        cfg = RayConfig(
            self.template,
            self.lang,
            self.limits,
            self.scale,
            address=self.ray or None,
            actors=workers if workers > 1 else 0,
        )
        if sys.stderr.isatty():
            self.progress = _Progress(locale(self.lang))
        try:
            run_on_ray(items, cfg, self._on_record)
        except RayMissing as e:
            fail(carried(e), hint=False)  # not a usage error to look up in --help
        finally:
            if self.progress:
                self.progress.close()

    def _on_record(self, line: str, rec: Record) -> None:
        plain = self.redactor is None and isinstance(self.format, JsonLines)
        self.write(line if plain else self._render(rec))
        self.stats.add(rec)
        if self.progress:
            self.progress.update(self.stats)

    def _in_process(self, items: Iterator[Item]) -> None:
        progress: Callable[[Stats], None] | None = self.progress.update if self.progress else None
        self.stats = aio.run(
            run_batch(
                stream_targets(items),
                self.template,
                self._emitter(),
                locale(self.lang),
                limits=self.limits,
                on_progress=progress,
                scale=self.scale,
            )
        )

    def _render(self, rec: Record) -> str:
        """The record in the run's format, masked with --redact."""
        if self.redactor is not None:
            target = rec.get("target")
            if isinstance(target, dict) and target.get("kind") != "literal":
                self.redactor.add_domain(target.get("domain") or target.get("host"))
            masked = self.redactor.json(rec)
            assert isinstance(masked, dict)  # json() keeps the shape of what it is given
            rec = masked
        return self.format.record(rec)

    def summary(self) -> str:
        stats = self.stats
        loc = locale(self.lang)
        verdicts = ", ".join(
            f"{_word(loc, f'verdict.{k}', k)} {v}" for k, v in stats.by_verdict.most_common()
        )
        cats = ", ".join(
            f"{_word(loc, f'category.{k}.title', k)} {v}"
            for k, v in stats.by_category.most_common()
        )
        elapsed = time.monotonic() - stats.started
        line = msg(
            "batch.summary",
            records=stats.done,
            seconds=elapsed,
            verdicts=verdicts or "-",
            categories=cats or "-",
        )
        if stats.reused:
            line = msg("batch.kept", summary=line, reused=stats.reused, sessions=stats.sessions)
        if stats.cached:
            line = msg("batch.cached", summary=line, cached=stats.cached, sessions=stats.sessions)
        if stats.skipped:
            line = msg("batch.skipped", summary=line, skipped=stats.skipped)
        return said_in(loc, line)


def _scale(
    cache_file: str | None, max_age: float, shard: str | None, sources: tuple[str, ...]
) -> Scale:
    """The options that spread a run, checked: a cache file that is not ours is refused here,
    before anything is probed."""
    if cache_file is not None:
        try:
            MxStore.open(cache_file).close()
        except CacheFileError as e:
            fail(carried(e), exitcodes.DATAERR)
    try:
        where = parse_shard(shard) if shard is not None else None
    except ShardError as e:
        fail(carried(e))
    for addr in sources:
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            fail(msg("usage.source_address", value=repr(addr)))
    return Scale(cache_file, max_age, where, tuple(dict.fromkeys(sources)))


def _run_into(
    job: _BatchRun,
    lines: Iterable[str | Refused],
    output: str | None,
    resume: bool,
    fmt: str,
    workers: int,
) -> None:
    """Run the batch into --output or stdout (the caller reports what fails)."""
    # A report is written whole (the file is replaced); JSON Lines are appended.
    done = _prepare_output(output, resume) if output and fmt == "jsonl" else set()
    items = ((n, text) for n, text in read_targets(lines) if n not in done)
    mode = "a" if fmt == "jsonl" else "w"
    job.sink = open(output, mode, encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    job.format = batch_format(fmt, locale(job.lang))
    job.write(job.format.start())
    job.run(items, workers)
    job.write(job.format.end())
    if job.sink is not sys.stdout:
        job.sink.close()  # inside the guard: some file systems report write errors here


@click.command(cls=Command)
@click.argument("source", default="-")
@live_options
@click.option(
    "--concurrency",
    type=AsciiInt(1, 10000),
    default=20,
    show_default=True,
    help="Sessions at once, overall.",
)
@click.option(
    "--per-host",
    type=AsciiInt(1, 1000),
    default=2,
    show_default=True,
    help="Sessions at once to one MX address.",
)
@click.option("--rate", type=AsciiDecimal(0.01, 100000), help="Targets started per second at most.")
@click.option(
    "--per-provider",
    type=AsciiInt(1, 10000),
    help="Sessions at once to one mail provider (the registrable domain of the MX host name, "
    "as --shard splits by), over all its MX hosts; no bound by default.",
)
@click.option(
    "--provider-rate",
    type=AsciiDecimal(0.01, 100000),
    help="Sessions started per second to one mail provider at most.",
)
@click.option(
    "--workers",
    type=AsciiInt(1, 64),
    default=1,
    show_default=True,
    help="Processes to spread the targets over (for more than one core); the limits above "
    "are shared out among them.",
)
@click.option(
    "--reuse",
    type=AsciiInt(1, 1000),
    default=10,
    show_default=True,
    help="Targets one connection may serve, one after another (MAIL, RCPT, RSET on a kept "
    "connection, as an MTA's connection cache does); 1 opens a new connection for each. "
    "A connection that has drawn several rejections is retired early: servers slow down "
    "clients that collect errors.",
)
@click.option(
    "--cache",
    "cache_file",
    metavar="FILE",
    help="Keep MX-level facts (greeting, extensions, TLS, certificate) in this SQLite file "
    "and reuse them in later runs for targets that check no recipient.",
)
@click.option(
    "--max-age",
    type=AsciiDecimal(0, 10 * 365 * 86400),
    default=DEFAULT_MAX_AGE,
    show_default=True,
    help="Seconds a fact in --cache may be reused.",
)
@click.option(
    "--shard",
    metavar="K/N",
    help="Probe only the targets of shard K of N, split by MX provider (one MX lookup per "
    "target decides); merge the shards' outputs with `smtp-probe merge`.",
)
@click.option(
    "--source-address",
    "sources",
    metavar="ADDR",
    multiple=True,
    help="Connect from this local address; repeat to use several, in turn for each provider.",
)
@click.option(
    "--ray",
    "ray_address",
    metavar="[ADDRESS]",
    is_flag=False,
    flag_value="",
    default=None,
    help="Run on Ray (pip install 'smtp-probe[ray]'): alone, a local Ray started for the run; "
    "`auto` or ray://HOST:10001, an existing cluster. --workers is then the number of actors "
    "(default: one per CPU); --per-host, --per-provider and the rates hold for the whole cluster. Put it after "
    "FILE, or write --ray=ADDRESS.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    help="Write to this file (JSON Lines are appended).",
)
@click.option("--resume", is_flag=True, help="With --output: skip inputs already recorded there.")
@click.option(
    "--format",
    "fmt",
    type=Choice(("jsonl", *REPORT_FORMATS)),
    default="jsonl",
    show_default=True,
    help="html: one report page; junit: a testsuite per target; github: workflow commands.",
)
@redact_option
@lang_option
def batch(
    source: str,
    concurrency: int,
    per_host: int,
    rate: float | None,
    per_provider: int | None,
    provider_rate: float | None,
    workers: int,
    reuse: int,
    cache_file: str | None,
    max_age: float,
    shard: str | None,
    sources: tuple[str, ...],
    ray_address: str | None,
    output: str | None,
    resume: bool,
    fmt: str,
    redact: bool,
    lang: str | None,
    live: LiveArgs,
) -> None:
    """Probe many targets, one a line (FILE or '-'), streaming JSON Lines in completion order."""
    if resume and not output:
        fail(msg("usage.resume_needs_output"))
    if resume and fmt != "jsonl":
        fail(msg("usage.resume_needs_jsonl"))
    limits = BatchLimits(
        concurrency, per_host, rate, reuse, per_provider=per_provider, provider_rate=provider_rate
    )
    scale = _scale(cache_file, max_age, shard, sources)
    job = _BatchRun(live.request(), resolve_lang(lang), limits, scale)
    if ray_address is not None and shard is not None:
        fail(msg("usage.ray_and_shard"))
    job.ray = ray_address
    job.redactor = Redactor() if redact else None
    lines, fd = _open_input(source)
    try:
        _run_into(job, lines, output, resume, fmt, workers)
    except KeyboardInterrupt:
        stop = msg("batch.interrupted_resume" if output else "batch.interrupted")
        say(said_in(locale(job.lang), stop))
        raise SystemExit(exitcodes.INTERRUPTED) from None
    except BrokenPipeError:
        raise  # the reader of our output went away: handled once, for every command
    except OSError as e:
        io_failed(e)  # reading the input or writing --output failed (a read error, a full disk)
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if job.sink is not sys.stdout:
            with contextlib.suppress(OSError):  # the failure that got us here is reported
                job.sink.close()
    say(job.summary())
    if live.expect and job.stats.unmet:
        # As `probe --expect`: the run fails when any target missed an expectation.
        raise SystemExit(exitcodes.UNAVAILABLE)
