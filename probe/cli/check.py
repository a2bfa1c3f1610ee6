"""`smtp-probe check`: a Nagios/Icinga plugin. One status line with perfdata, a line per MX
session, exit 0-3; bad arguments are UNKNOWN (3) with one line, as plugins answer."""

from __future__ import annotations

import contextlib
import io
from dataclasses import replace
from typing import Any, NoReturn

import click

from probe import aio
from probe.cli.common import lang_option, resolve_lang
from probe.cli.helptext import Command
from probe.cli.options import LiveArgs, live_options
from probe.cli.usage import DEFAULT_LANG, argv_lang, click_message
from probe.messages import carried, msg
from probe.metrics import throttle_sign
from probe.nagios import Answer, Range, Thresholds, answer, parse_range, unknown
from probe.runner import probe as run_probe
from probe.target import TargetError, parse_target


def _unknown(message: str, lang: str = "en") -> NoReturn:
    _emit(unknown(message, lang))
    raise AssertionError  # not reached


def _emit(got: Answer) -> NoReturn:
    click.echo(got.text)
    raise SystemExit(got.state)


class _PluginCommand(Command):
    """Usage errors answer UNKNOWN on standard output (what Nagios shows), not status 64."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.ClickException as e:
            given = args[1] if len(args) > 1 else kwargs.get("args", [])
            _unknown(click_message(e), argv_lang(given) or "en")


def _range(value: str | None, name: str, days: bool, lang: str) -> Range | None:
    if value is None:
        return None
    try:
        return parse_range(value, bare_is_minimum=days)
    except ValueError as e:
        _unknown(msg("nagios.option", option=name, reason=carried(e)), lang)


@click.command(name="check", cls=_PluginCommand)
@click.argument("target")
@click.option("--host", "host_mode", is_flag=True, help="TARGET is a host: no MX lookup.")
@click.option("--warning-days", metavar="RANGE", help="Certificate days left (a bare N means N:).")
@click.option("--critical-days", metavar="RANGE", help="Certificate days left (a bare N means N:).")
@click.option(
    "--warning-time", metavar="RANGE", help="Seconds the whole probe took (10, ~:10 ...)."
)
@click.option("--critical-time", metavar="RANGE", help="Seconds the whole probe took.")
@lang_option
@live_options
def check(
    target: str,
    host_mode: bool,
    warning_days: str | None,
    critical_days: str | None,
    warning_time: str | None,
    critical_time: str | None,
    lang: str | None,
    live: LiveArgs,
) -> None:
    """Check TARGET as a Nagios plugin: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."""
    # English unless asked: a plugin's environment is the monitoring server's, not a reader's.
    click.get_current_context().meta[DEFAULT_LANG] = "en"
    try:
        chosen = resolve_lang(lang) if lang else "en"
    except click.BadParameter as e:
        _unknown(click_message(e))
    limits = Thresholds(
        _range(warning_days, "--warning-days", True, chosen),
        _range(critical_days, "--critical-days", True, chosen),
        _range(warning_time, "--warning-time", False, chosen),
        _range(critical_time, "--critical-time", False, chosen),
    )
    said = io.StringIO()
    try:
        # The shared options report their mistakes as `smtp-probe: error:` on standard error
        # and exit 64; a plugin says it on standard output and exits 3.
        with contextlib.redirect_stderr(said):
            template = live.request()
        req = replace(template, target=parse_target(target, host_mode=host_mode))
    except TargetError as e:
        _unknown(carried(e), chosen)
    except SystemExit:
        told = said.getvalue().strip().removeprefix("smtp-probe: error: ")
        _unknown(told or msg("nagios.bad_arguments"), chosen)
    try:
        result = aio.run(run_probe(req))
    except Exception as e:  # a bug must still answer as a plugin does
        _unknown(msg("nagios.internal", error=f"{type(e).__name__}: {e}"), chosen)
    throttled = throttle_sign(result, None) is not None
    _emit(answer(result, limits, throttled=throttled, lang=chosen))
