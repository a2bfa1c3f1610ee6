"""`smtp-probe check`: a Nagios/Icinga plugin. One status line with perfdata, a line per MX
session, exit 0-3; bad arguments are UNKNOWN (3) with one line, as plugins answer."""

from __future__ import annotations

import contextlib
import io
from dataclasses import replace
from typing import Any, NoReturn

import click

from probe import aio
from probe.cli.options import LiveArgs, live_options
from probe.metrics import throttle_sign
from probe.nagios import Answer, Range, Thresholds, answer, parse_range, unknown
from probe.runner import probe as run_probe
from probe.target import TargetError, parse_target


def _unknown(message: str) -> NoReturn:
    _emit(unknown(message))
    raise AssertionError  # not reached


def _emit(got: Answer) -> NoReturn:
    click.echo(got.text)
    raise SystemExit(got.state)


class _PluginCommand(click.Command):
    """Usage errors answer UNKNOWN on standard output (what Nagios shows), not status 64."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.ClickException as e:
            _unknown(e.format_message())


def _range(value: str | None, name: str, days: bool) -> Range | None:
    if value is None:
        return None
    try:
        return parse_range(value, bare_is_minimum=days)
    except ValueError as e:
        _unknown(f"{name}: {e}")


@click.command(name="check", cls=_PluginCommand)
@click.argument("target")
@click.option("--host", "host_mode", is_flag=True, help="TARGET is a host: no MX lookup.")
@click.option("--warning-days", metavar="RANGE", help="Certificate days left (a bare N means N:).")
@click.option("--critical-days", metavar="RANGE", help="Certificate days left (a bare N means N:).")
@click.option(
    "--warning-time", metavar="RANGE", help="Seconds the whole probe took (10, ~:10 ...)."
)
@click.option("--critical-time", metavar="RANGE", help="Seconds the whole probe took.")
@live_options
def check(
    target: str,
    host_mode: bool,
    warning_days: str | None,
    critical_days: str | None,
    warning_time: str | None,
    critical_time: str | None,
    live: LiveArgs,
) -> None:
    """Check TARGET as a Nagios plugin: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."""
    limits = Thresholds(
        _range(warning_days, "--warning-days", True),
        _range(critical_days, "--critical-days", True),
        _range(warning_time, "--warning-time", False),
        _range(critical_time, "--critical-time", False),
    )
    said = io.StringIO()
    try:
        # The shared options report their mistakes as `smtp-probe: error:` on standard error
        # and exit 64; a plugin says it on standard output and exits 3.
        with contextlib.redirect_stderr(said):
            template = live.request()
        req = replace(template, target=parse_target(target, host_mode=host_mode))
    except TargetError as e:
        _unknown(str(e))
    except SystemExit:
        _unknown(said.getvalue().strip().removeprefix("smtp-probe: error: ") or "bad arguments")
    try:
        result = aio.run(run_probe(req))
    except Exception as e:  # a bug must still answer as a plugin does
        _unknown(f"internal error: {type(e).__name__}: {e}")
    _emit(answer(result, limits, throttled=throttle_sign(result, None) is not None))
