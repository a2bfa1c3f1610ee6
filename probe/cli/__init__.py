"""The `smtp-probe` command line: a thin click layer over the core and the I/O rooms.

Only this package writes to stdout/stderr or exits. Each command lives in the module of its
kind, loaded by name when that command runs (`COMMANDS`): `offline` (explain, compare,
codes) and `schema` need no network stack; `live` (probe), `bulk` (batch), `domain` (mx) and `demo` are
where the CLI meets it, each loading only what its command uses.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import io
import os
import sys
from collections.abc import Iterator
from typing import Any

import click

from probe import exitcodes
from probe.cli.helptext import Command

# name -> (module, attribute, one-line help): `--help` lists commands without loading them.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "probe": (
        "probe.cli.live",
        "probe_command",
        "Probe TARGET live: a domain, user@domain, a host.",
    ),
    "batch": ("probe.cli.bulk", "batch", "Probe many targets, one a line, as JSON Lines."),
    "merge": ("probe.cli.merge", "merge", "Join the outputs of batch --shard into one stream."),
    "mx": ("probe.cli.domain", "mx", "Check a domain's mail setup: MX, DNS, TLS, DANE, MTA-STS."),
    "explain": (
        "probe.cli.offline",
        "explain",
        "Explain SMTP replies, codes, bounces and log lines.",
    ),
    "compare": ("probe.cli.offline", "compare", "Compare two codes side by side (421 521)."),
    "codes": ("probe.cli.offline", "codes", "List the catalog: basic, enhanced codes, rules."),
    "demo": ("probe.cli.demo", "demo", "Probe mail servers started on 127.0.0.1 for this."),
    "serve": ("probe.cli.serve", "serve", "Run the Prometheus exporter (/probe?target=...)."),
    "check": ("probe.cli.check", "check", "Nagios/Icinga check: status line, perfdata, 0-3."),
    "schema": (
        "probe.cli.schema",
        "schema",
        "Print the JSON Schema of an output (probe, mx, ...).",
    ),
}


def looks_like_target(word: str) -> bool:
    """A domain, an address, an address literal or host:port, as opposed to a stray word."""
    if any(c in word for c in ".@[:"):
        return True
    import ipaddress  # only for a first word that names no command: not worth loading for all

    try:
        ipaddress.ip_address(word)
    except ValueError:
        return False
    return True


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


_GROUP_OPTIONS = ("-h", "--help", "--version")


class _Group(Command, click.Group):
    """A group where `smtp-probe TARGET` is short for `smtp-probe probe TARGET`, commands
    load on demand, and click's usage errors exit with 64 (EX_USAGE) instead of 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        command = getattr(importlib.import_module(entry[0]), entry[1])
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, entry[2]) for name, entry in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        given = args[0] if args else kwargs.get("args")
        argv = list(given) if given is not None else sys.argv[1:]
        try:
            rv = super().main(*args, **kwargs)
        except (click.exceptions.Abort, KeyboardInterrupt):
            from probe.cli.common import say
            from probe.cli.usage import notice
            from probe.messages import msg

            say(notice(msg("usage.interrupted"), argv))
            sys.exit(exitcodes.INTERRUPTED)
        except click.ClickException as e:
            from probe.cli.common import say
            from probe.cli.usage import click_error

            say(click_error(e, argv))
            sys.exit(exitcodes.USAGE)
        sys.exit(rv if isinstance(rv, int) else exitcodes.OK)

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _output_guard():  # --help and --version write here
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        # Guarded here, not in main(): click turns EPIPE into a bare exit status 1 on its way out.
        with _output_guard():
            try:
                return super().invoke(ctx)
            finally:
                # Inside the guard: output still buffered would otherwise fail at exit, with
                # "Exception ignored" and status 120 instead of one line and 74.
                if sys.stdout is not None:
                    sys.stdout.flush()

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["smtp_probe.argv"] = list(args)  # the language of an error (cli/usage.py)
        first = args[0] if args else None
        if first is not None and first not in COMMANDS and first not in _GROUP_OPTIONS:
            if not first.startswith("-") and not looks_like_target(first):
                raise _unknown_command(first, ctx)
            args = ["probe", *args]
        return super().parse_args(ctx, args)


@contextlib.contextmanager
def _output_guard() -> Iterator[None]:
    """Every command's output failures, handled once: the reader of a pipe gone (`| head`)
    ends the run quietly with 0; any other failure to write or read (a full disk, a closed
    standard output, an unwritable file) is one line and exit 74."""
    # What the guard needs is loaded only when something fails: `--help` stays light.
    try:
        yield
    except BrokenPipeError as e:
        from probe.cli.common import io_failed, silence

        if not _stdout_gone():
            io_failed(e)
        # The reader of our output went away: stop quietly, as Unix tools do.
        silence(sys.stdout)
        raise SystemExit(exitcodes.OK) from None
    except OSError as e:
        from probe.cli.common import io_failed

        io_failed(e)


class _ClosedOutput(io.TextIOBase):
    """Standard output when the process started with it closed (`>&-`): every write fails,
    so that output with nowhere to go is an error (74), not silence."""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        raise OSError(errno.EBADF, "standard output is closed")


def _claim_standard_descriptors() -> None:
    """Give /dev/null to a standard descriptor that is closed at start. Otherwise the next
    file or socket opened takes its number: output would land in it, and uvloop aborts the
    process when it closes a socket numbered 0-2."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            new = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if new != fd:
                os.dup2(new, fd)
                os.close(new)
            if fd == 1:
                sys.stdout = _ClosedOutput()


def _escape_what_output_cannot_encode() -> None:
    """A standard output whose encoding cannot hold a character (LANG=zh_TW.Big5 with Simplified
    Chinese, latin-1 with Korean) gets it as a \\u escape, not a traceback. The escape is
    JSON's, so JSON output stays valid too."""
    out = sys.stdout
    encoding = (getattr(out, "encoding", None) or "").lower().replace("_", "-")
    if encoding in ("utf-8", "utf8") or not hasattr(out, "reconfigure"):
        return  # (every run on a UTF-8 terminal: nothing to load)
    import codecs

    codecs.register_error("smtp-probe-escape", _u_escapes)
    with contextlib.suppress(ValueError, OSError):
        out.reconfigure(errors="smtp-probe-escape")


def _u_escapes(e: UnicodeError) -> tuple[str, int]:
    if not isinstance(e, UnicodeEncodeError):
        raise e
    from probe.text import u_escape

    return "".join(u_escape(ch) for ch in e.object[e.start : e.end]), e.end


def _unknown_command(word: str, ctx: click.Context) -> click.UsageError:
    """A word that is neither a command nor anything a target could be: send nothing."""
    import difflib  # only on this error path: it costs 5 ms of every start-up

    from probe.messages import msg

    close = difflib.get_close_matches(word, list(COMMANDS), n=1, cutoff=0.6)
    if close:
        return click.UsageError(msg("usage.no_command_meant", word=repr(word), meant=close[0]), ctx)
    return click.UsageError(msg("usage.no_command_host", word=repr(word)), ctx)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smtp-probe", prog_name="smtp-probe")
def cli() -> None:
    """Probe mail servers live and explain every SMTP reply.

    \b
    Live:     smtp-probe example.com   smtp-probe user@example.com --expect starttls
    Offline:  smtp-probe explain "550 5.1.1 User unknown"   smtp-probe compare 421 521
              smtp-probe codes --class 4   smtp-probe demo
    """


# Commands that are done once their output is written: they leave no thread, child process,
# open file or temporary directory behind for the interpreter's teardown to close.
_ONE_SHOT = frozenset({"probe", "mx", "explain", "compare", "codes", "check", "schema"})


def main() -> None:
    """Run the command line on `sys.argv`; ends with SystemExit, as click does."""
    _claim_standard_descriptors()
    _escape_what_output_cannot_encode()
    cli()


def console() -> None:
    """The process's entry point (`smtp-probe`, `python -m probe`): `main`, then the end of
    the process, without the interpreter's teardown after a one-shot command."""
    try:
        main()
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            _exit_without_teardown(e.code or 0, sys.argv[1:])
        raise


def _watched() -> bool:
    """Whether a profiler, debugger or coverage tool watches this process."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return True
    # From Python 3.12 cProfile (and coverage, with its sysmon core) use sys.monitoring
    # (PEP 669) instead of the hooks above; its tools have the ids 0 to 5.
    monitoring = getattr(sys, "monitoring", None)
    return monitoring is not None and any(monitoring.get_tool(i) for i in range(6))


def _exit_without_teardown(code: int, argv: list[str]) -> None:
    """End a one-shot command at once, its output flushed: the interpreter's teardown (freeing
    every module, two OpenSSL libraries) is some 5% of a whole `probe` process and serves
    nothing here. Returns, for the usual way out, when anything might still need it."""
    first = argv[0] if argv else ""
    if (first if first in COMMANDS else "probe") not in _ONE_SHOT:
        return
    if _watched():
        return  # a profiler or coverage writes its findings at exit
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return  # the usual way out reports it, as it always has
    os._exit(code)
