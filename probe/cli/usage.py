"""Usage errors in the user's language, click's own among them.

Loaded only when something is refused: start-up does not pay for the message catalog. The
language of an error is the command's `--lang` once parsed, else a `--lang` written in the
arguments (the error may be in the option before it), else the environment's, else English.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Sequence

import click

from probe.catalog import locale
from probe.messages import Message, msg, say
from probe.text import lang_from_env, normalize_lang

# Where the group keeps the arguments it was given (ctx.meta is shared by every context of a
# run): an error raised before `--lang` is parsed still finds it there.
ARGV = "smtp_probe.argv"
# A command whose output must not follow the environment's language (a plugin: see check.py)
# puts its default here.
DEFAULT_LANG = "smtp_probe.default_lang"
PREFIX = "smtp-probe: error: "  # fixed in every language: scripts look for it


def argv_of(ctx: click.Context | None) -> Sequence[str]:
    found = ctx.meta.get(ARGV) if ctx is not None else None
    return found if isinstance(found, list) else []


def error_lang(ctx: click.Context | None, argv: Sequence[str] = ()) -> str:
    """The language to refuse in (see the module's docstring)."""
    here = ctx
    while here is not None:
        chosen = _lang(here.params.get("lang"))
        if chosen:
            return chosen
        here = here.parent
    chosen = argv_lang(list(argv) or list(argv_of(ctx)))
    if chosen:
        return chosen
    default = ctx.meta.get(DEFAULT_LANG) if ctx is not None else None
    return default if isinstance(default, str) else lang_from_env(os.environ)


def argv_lang(words: Sequence[str]) -> str | None:
    """The language of a `--lang X` or `--lang=X` among the arguments, if it is one."""
    for i, word in enumerate(words):
        if word == "--":
            break
        value = words[i + 1] if word == "--lang" and i + 1 < len(words) else None
        chosen = _lang(word.removeprefix("--lang=") if word.startswith("--lang=") else value)
        if chosen:
            return chosen
    return None


def _lang(value: object) -> str | None:
    return normalize_lang(value) if isinstance(value, str) and value else None


def error_line(
    message: str, ctx: click.Context | None, argv: Sequence[str] = (), *, hint: bool = True
) -> str:
    """`smtp-probe: error: ...` in the error's language, with where to find help in the
    command `ctx` (no hint outside one, or when the text gives it)."""
    loc = locale(error_lang(ctx, argv))
    if hint and ctx is not None and "--help" not in message:
        message = msg("usage.with_hint", message=message, command=ctx.command_path)
    return PREFIX + say(loc, message)


def notice(message: str, argv: Sequence[str] = ()) -> str:
    """A line for stderr that is not an error (a run interrupted, a file repaired), in the
    language an error of this run would be in."""
    ctx = click.get_current_context(silent=True)
    return say(locale(error_lang(ctx, argv)), message)


def click_error(e: click.ClickException, argv: Sequence[str] = ()) -> str:
    """One of click's usage errors as one line, in the user's language."""
    ctx = getattr(e, "ctx", None)
    ctx = ctx if isinstance(ctx, click.Context) else None
    return error_line(click_message(e), ctx, argv)


def click_message(e: click.ClickException) -> str:
    """What click says, as a message where we know its sentence; click's own text otherwise."""
    if isinstance(e, click.NoSuchOption):
        return _no_such_option(e)
    if isinstance(e, click.MissingParameter):
        kind = e.param_type or (e.param.param_type_name if e.param is not None else "parameter")
        name = _hint(e) or (e.param.name if e.param is not None and e.param.name else "")
        known = kind if kind in ("argument", "option") else "parameter"
        return msg(f"usage.missing_{known}", name=name)
    if isinstance(e, click.BadParameter):
        hint = _hint(e)
        if hint is None:
            return msg("usage.invalid", detail=e.message)
        return msg("usage.invalid_value", option=hint, detail=e.message)
    if isinstance(e.message, Message):
        return e.message
    return _by_pattern(e.message)


def _hint(e: click.BadParameter) -> str | None:
    if e.param_hint is not None:
        hint = e.param_hint
        return hint if isinstance(hint, str) else " / ".join(repr(x) for x in hint)
    return e.param.get_error_hint(e.ctx) if e.param is not None else None


def _no_such_option(e: click.NoSuchOption) -> str:
    if not e.message.startswith("No such option"):
        return e.message  # a message click was given, not its own
    first = msg("usage.no_such_option", option=repr(e.option_name))
    if not e.possibilities:
        return first
    names = ", ".join(repr(p) for p in sorted(e.possibilities))
    many = len(e.possibilities) > 1
    return msg("join.space", first=first, second=msg(_MEANT[many], names=names))


_MEANT = ("usage.did_you_mean", "usage.did_you_mean_one_of")

# click's sentences that carry no parameters beyond their text: English pattern -> message.
_PATTERNS: tuple[tuple[str, Callable[[re.Match[str]], Message]], ...] = (
    (
        r"Option '(.+)' requires an argument\.",
        lambda m: msg("usage.needs_argument", option=m[1]),
    ),
    (
        r"Option '(.+)' requires (\d+) arguments\.",
        lambda m: msg("usage.needs_arguments", option=m[1], count=int(m[2])),
    ),
    (
        r"Option '(.+)' does not take a value\.",
        lambda m: msg("usage.takes_no_value", option=m[1]),
    ),
    (
        r"Got unexpected extra argument \((.*)\)",
        lambda m: msg("usage.extra_argument", args=m[1]),
    ),
    (
        r"Got unexpected extra arguments \((.*)\)",
        lambda m: msg("usage.extra_arguments", args=m[1]),
    ),
    (r"No such command '(.*)'\.", lambda m: msg("usage.no_command", word=repr(m[1]))),
    (r"Missing command\.", lambda m: msg("usage.missing_command")),
)


def _by_pattern(text: str) -> str:
    for pattern, make in _PATTERNS:
        m = re.fullmatch(pattern, text)
        if m is not None:
            return make(m)
    return text


def choice_message(value: object, choices: Sequence[str]) -> Message:
    """What click.Choice says of a value that is none of its choices."""
    listed = ", ".join(repr(c) for c in choices)
    if len(choices) == 1:
        return msg("usage.not_the_choice", value=repr(value), choice=listed)
    return msg("usage.not_a_choice", value=repr(value), choices=listed)


def os_reason(e: OSError) -> str:
    """Why the system refused, in words we can translate where the error is a common one."""
    key = _ERRNO.get(e.errno or 0)
    if key is not None:
        return msg(f"oserror.{key}")
    return e.strerror or str(e)


# The errors a user meets naming a file; any other keeps the system's own words.
_ERRNO = {
    errno.ENOENT: "enoent",
    errno.EACCES: "eacces",
    errno.ENOTDIR: "enotdir",
    errno.EISDIR: "eisdir",
    errno.ENOSPC: "enospc",
    errno.EROFS: "erofs",
}
