"""What every command shares: errors, output, colour, the language option."""

from __future__ import annotations

import os
import sys
from typing import IO, NoReturn

import click

from probe import exitcodes
from probe.render import Styler
from probe.text import lang_from_env, normalize_lang, to_json

FORMATS = ("text", "json", "jsonl")
REPORT_FORMATS = ("html", "junit", "github")  # probe.cli.report


def fail(message: str, status: int = exitcodes.USAGE) -> NoReturn:
    """One-line error on stderr and a documented exit status."""
    click.echo(f"smtp-probe: error: {message}", err=True)
    raise SystemExit(status)


def resolve_lang(value: str | None) -> str:
    """The language asked for, else the environment's (LC_ALL, LANG), else English."""
    if value:
        chosen = normalize_lang(value)
        if chosen is None:
            raise click.BadParameter(
                f"{value!r} is not one of en, zh, de, ko", param_hint="'--lang'"
            )
        return chosen
    return lang_from_env(os.environ)


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


lang_option = click.option(
    "--lang",
    metavar="LANG",
    help="Language of explanations: en, zh, de or ko (default: from LC_ALL/LANG, else en).",
)
