"""What every command shares: errors, output, colour, the language option."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import IO, TYPE_CHECKING, NoReturn

import click

from probe import exitcodes
from probe.render import Styler
from probe.text import lang_from_env, normalize_lang, to_json

if TYPE_CHECKING:
    from probe.messages import Param

FORMATS = ("text", "json", "jsonl")
REPORT_FORMATS = ("html", "junit", "github")  # probe.cli.report


def say(line: str) -> None:
    """One line on stderr, if stderr can take it: a failed error message must not become a
    second error (and a line left in stderr's buffer would fail again at exit)."""
    try:
        click.echo(line, err=True)
    except (OSError, ValueError):
        silence(sys.stderr)


def silence(stream: IO[str] | None) -> None:
    """Point a standard stream that failed at /dev/null, descriptor and all: what its buffer
    still holds then goes nowhere at exit instead of failing again ("Exception ignored")."""
    try:
        fd = stream.fileno() if stream is not None else -1
    except (AttributeError, OSError, ValueError):  # not a descriptor (a test's capture)
        return
    if fd < 0:
        return
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)


def fail(message: str, status: int = exitcodes.USAGE, *, hint: bool = True) -> NoReturn:
    """One-line error on stderr and a documented exit status; a usage error also says where
    to look for help, as click's own usage errors do (`hint=False`: for an error in a file's
    content, where the help would not help). A `probe.messages.Message` is said in the
    user's language."""
    from probe.cli.usage import error_line  # the message catalog: on the error path only

    ctx = click.get_current_context(silent=True)
    wanted = hint and status == exitcodes.USAGE
    say(error_line(message, ctx, () if ctx else sys.argv[1:], hint=wanted))
    raise SystemExit(status)


def refuse(id: str, /, **params: Param) -> NoReturn:
    """A usage error (64) by message id: `fail(msg(id, **params))` for modules that do not
    load the message catalog at start."""
    from probe.messages import msg

    fail(msg(id, **params))


def io_failed(e: OSError) -> NoReturn:
    """Reading the input or writing the output failed (a full disk, a closed or unwritable
    output): one line, exit 74. Standard output is silenced, since it may be what failed."""
    from probe.cli.usage import os_reason
    from probe.messages import msg

    silence(sys.stdout)
    reason = os_reason(e)
    if e.filename:
        fail(msg("usage.io_error_file", path=str(e.filename), reason=reason), exitcodes.IOERR)
    fail(msg("usage.io_error", reason=reason), exitcodes.IOERR)


class AsciiInt(click.IntRange):
    """An integer option that takes ASCII digits and nothing else (`probe.target.parse_int`)."""

    def __init__(self, low: int, high: int) -> None:
        super().__init__(low, high)
        self.low, self.high = low, high

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):  # a default
            return value
        from probe.target import TargetError, parse_int  # not loaded by offline start-up

        try:
            return parse_int(str(value), self.low, self.high)
        except TargetError as e:
            self.fail(e.args[0], param, ctx)


class AsciiDecimal(click.FloatRange):
    """A seconds or rate option: plain decimals in ASCII (`probe.target.parse_decimal`)."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__(low, high)
        self.low, self.high = low, high

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float | int):
            return float(value)
        from probe.target import TargetError, parse_decimal

        try:
            return parse_decimal(str(value), self.low, self.high)
        except TargetError as e:
            self.fail(e.args[0], param, ctx)


def resolve_lang(value: str | None) -> str:
    """The language asked for, else the environment's (LC_ALL, LANG), else English."""
    if value:
        chosen = normalize_lang(value)
        if chosen is None:
            from probe.messages import msg

            raise click.BadParameter(
                msg("usage.bad_lang", value=repr(value)), param_hint="'--lang'"
            )
        return chosen
    return lang_from_env(os.environ)


class Choice(click.Choice[str]):
    """click.Choice that refuses a value in the user's language, on one line."""

    def get_invalid_choice_message(self, value: object, ctx: click.Context | None) -> str:
        from probe.cli.usage import choice_message

        return choice_message(value, [str(c) for c in self.choices])

    def get_missing_message(self, param: click.Parameter, ctx: click.Context | None) -> str:
        return ""  # click's is a list over several lines; the usage error is one


class ExistingFile(click.Path):
    """A file that must exist (--cafile), refused in the user's language."""

    def __init__(self) -> None:
        super().__init__(exists=True, dir_okay=False)

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        path = os.fspath(value) if isinstance(value, str | os.PathLike) else str(value)
        if not os.path.exists(path) or os.path.isdir(path):
            from probe.messages import msg

            missing = not os.path.exists(path)
            self.fail(msg("usage.no_file" if missing else "usage.is_dir", path=repr(path)))
        return str(super().convert(path, param, ctx))


def colour_enabled(stream: IO[str]) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def styler(enabled: bool) -> Styler:
    def style(text: str, colour: str | None = None, bold: bool = False) -> str:
        if not enabled or (colour is None and not bold):
            return text
        return click.style(text, fg=colour, bold=bold)

    return style


def stdout_styler() -> Styler:
    return styler(colour_enabled(sys.stdout))


def echo(text: str) -> None:
    click.echo(text, color=True)


def dump(obj: object) -> str:
    return to_json(obj, indent=2)


# probe and mx: a transcript or findings as text or JSON, or one of the reports.
format_option = click.option(
    "--format",
    "fmt",
    type=Choice(("text", "json", *REPORT_FORMATS)),
    default="text",
    show_default=True,
    help="text to read, json for programs (a published schema), html, junit or github for "
    "reports and CI.",
)

redact_option = click.option(
    "--redact",
    is_flag=True,
    help="Replace mail addresses, the target domain's host names and IP addresses with "
    "numbered placeholders (user-1, host-1.example, 192.0.2.1): one value, one placeholder.",
)

lang_option = click.option(
    "--lang",
    metavar="LANG",
    help="Language of explanations: en, zh, de or ko (default: from LC_ALL/LANG, else en).",
)
