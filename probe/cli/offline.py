"""Commands that need no network: explain, compare, codes. Nothing here imports asyncio,
ssl or dnspython (tests/test_architecture.py checks it)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

import click

from probe import catalog, exitcodes
from probe.catalog import Locale, locale
from probe.cli.common import (
    FORMATS,
    AsciiInt,
    Choice,
    colour_enabled,
    dump,
    echo,
    fail,
    lang_option,
    redact_option,
    refuse,
    resolve_lang,
    stdout_styler,
    styler,
)
from probe.cli.helptext import Command
from probe.interpret import Interpreter, interpret_reply
from probe.interpret import explain as explain_one
from probe.model import CATEGORIES, Interpretation, NotAReply
from probe.pasted import stream_reply
from probe.render import Styler
from probe.render import explain as explain_render
from probe.reply import parse, scan
from probe.text import to_json

if TYPE_CHECKING:
    from probe.redact import Redactor

# Bytes of one log line that are read; the rest of a longer line is skipped, not held.
MAX_LINE = 64 * 1024


def _read_stream(stream: IO[bytes]) -> Iterator[str]:
    """Lines of a byte stream, decoded leniently, one at a time: memory stays flat however
    long the input and its lines. A UTF-8 byte-order mark at the start is not part of it."""
    first = True
    while raw := stream.readline(MAX_LINE):
        if len(raw) == MAX_LINE and not raw.endswith(b"\n"):
            while (rest := stream.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass  # the part of an over-long line past MAX_LINE
        if first:
            raw, first = raw.removeprefix(b"\xef\xbb\xbf"), False
        yield raw.decode("utf-8", "backslashreplace").rstrip("\r\n")


class _Explained:
    """Where each explanation goes: printed as it comes (one JSON array is written record
    by record too), or counted for --summary. Nothing printed is kept."""

    def __init__(self, fmt: str, summary: bool, loc: Locale, style: Styler) -> None:
        self.fmt, self.summary, self.loc, self.style = fmt, summary, loc, style
        self.stats = explain_render.Summary()
        self.interpret = Interpreter()  # this run's: identical replies are interpreted once
        self.found = self.missing = 0
        self._printed = 0
        self.redactor: Redactor | None = None

    def _redacted(self, doc: object) -> object:
        """Text or a JSON document as printed: redacted with --redact."""
        if self.redactor is None:
            return doc
        return self.redactor.text(doc) if isinstance(doc, str) else self.redactor.json(doc)

    def _show(self, doc: object) -> None:
        """Print text or one JSON document, redacted with --redact."""
        doc = self._redacted(doc)
        if isinstance(doc, str):
            echo(doc)
        else:
            echo(to_json(doc, indent=None if self.fmt == "jsonl" else 2))

    def add(self, e: Interpretation | NotAReply) -> None:
        if isinstance(e, NotAReply):
            self.missing += 1
        else:
            self.found += 1
        if self.summary:
            self.stats.add(e)
        elif self.fmt == "json":
            # As dump() would write the whole array: each element indented one level more.
            element = dump(self._redacted(explain_render.to_json(e, self.loc)))
            element = element.replace("\n", "\n  ")
            click.echo(("[\n  " if not self._printed else ",\n  ") + element, nl=False, color=True)
        elif self.fmt == "jsonl":
            self._show(explain_render.to_json(e, self.loc))
        else:
            if self._printed:
                echo("")
            self._show(explain_render.to_text(e, self.loc, self.style))
        self._printed += not self.summary

    def read(self, stream: IO[bytes]) -> None:
        """A whole log: lines without a reply are counted (for --summary), not shown."""
        for line, scanned in scan(_read_stream(stream)):
            # A pasted Sendmail, M365 or Gmail line reads as it does given as an argument.
            reply = stream_reply(line, scanned) if scanned is not None or line[3:4] == ":" else None
            if reply is not None:
                self.add(self.interpret(reply, line))
            elif self.summary:
                self.stats.other()

    def close(self) -> None:
        if self.summary and self.fmt == "text":
            self._show(explain_render.summary_text(self.stats, self.loc, self.style))
        elif self.summary:
            self._show(explain_render.summary_json(self.stats, self.loc))
        elif self.fmt == "json":
            echo("\n]" if self._printed else "[]")


@click.command(cls=Command)
@click.argument("items", nargs=-1)
@click.option(
    "--format",
    "fmt",
    type=Choice(FORMATS),
    default="text",
    show_default=True,
    help="text to read; json: one document; jsonl: one line per item, as it is read.",
)
@click.option(
    "--summary", is_flag=True, help="With '-': counts by category and code, one example each."
)
@click.option(
    "--email",
    "emails",
    multiple=True,
    metavar="FILE|-",
    help="A whole bounce email (RFC 3464 or an MTA's text bounce): one item per failed "
    "recipient. '-' reads it from standard input. Repeatable.",
)
@redact_option
@lang_option
def explain(
    items: tuple[str, ...],
    fmt: str,
    summary: bool,
    emails: tuple[str, ...],
    redact: bool,
    lang: str | None,
) -> None:
    """Explain SMTP replies: codes, reply lines, bounces, MTA log lines, DSN fields.

    ITEM is a code (550, 5.7.26), a reply, a log line (Postfix, Exim, Sendmail), a swaks
    transcript line or a pasted Microsoft 365 or Gmail bounce text. '-' reads standard input
    line by line (a whole mail log): lines without a reply are counted, not shown.
    """
    loc = locale(resolve_lang(lang))
    if not items and not emails:
        refuse("usage.give_item")
    if summary and "-" not in items and not emails:
        refuse("usage.summary_needs_stdin")
    out = _Explained(fmt, summary, loc, styler(fmt == "text" and colour_enabled(sys.stdout)))
    if redact:  # loaded only when asked for, as the other commands' renderers are
        from probe.redact import Redactor

        out.redactor = Redactor()
    if emails:
        # Loaded for --email only: reading MIME costs every other explain a tenth of its start.
        from probe.bounce import explain_email

    for path in emails:
        for interpretation in explain_email(_email_bytes(path)):
            out.add(interpretation)
    for item in items:
        if item == "-":
            out.read(sys.stdin.buffer)
        else:
            e = explain_one(item)
            out.add(e)
    out.close()
    if not out.found or out.missing:
        from probe.messages import msg, say

        none = msg("usage.no_reply_found")
        told = none if not out.found else msg("usage.items_without_reply", count=out.missing)
        click.echo(say(loc, told), err=True)
        raise SystemExit(exitcodes.DATAERR)


def _email_bytes(path: str) -> bytes:
    """The bytes of one email, at most what bounce.py reads; a file that cannot be read is a
    one-line error."""
    from probe.bounce import MAX_EMAIL

    try:
        if path == "-":
            return sys.stdin.buffer.read(MAX_EMAIL)
        with open(path, "rb") as f:
            return f.read(MAX_EMAIL)
    except OSError as e:
        from probe.cli.usage import os_reason
        from probe.messages import msg

        reason = os_reason(e)
        fail(msg("usage.cannot_read", path=path, reason=reason), exitcodes.NOINPUT, hint=False)


def _code_item(value: str) -> Interpretation:
    r = parse(value)
    if r is None or r.form.value not in ("code", "enhanced"):
        refuse("usage.not_a_code", value=repr(value))
    return interpret_reply(r, value)


_text_or_json = click.option(
    "--format",
    "fmt",
    type=Choice(("text", "json")),
    default="text",
    show_default=True,
    help="text to read, or json for programs.",
)


@click.command(cls=Command)
@click.argument("a")
@click.argument("b")
@_text_or_json
@lang_option
def compare(a: str, b: str, fmt: str, lang: str | None) -> None:
    """Compare two codes side by side (421 521, or 5.1.1 5.2.2)."""
    from probe.render import compare as compare_render

    loc = locale(resolve_lang(lang))
    ia, ib = _code_item(a), _code_item(b)
    if fmt == "json":
        echo(dump(compare_render.to_json(ia, ib, loc)))
    else:
        echo(compare_render.to_text(ia, ib, loc, stdout_styler()))


@click.command(cls=Command)
@click.option(
    "--kind",
    type=Choice(("basic", "enhanced", "rules", "all")),
    default="basic",
    show_default=True,
    help="Which part to list: basic codes, enhanced codes, provider rules, or all three.",
)
@click.option("--class", "klass", type=AsciiInt(2, 5), help="Only codes of this class (2-5).")
@click.option("--category", help="Only entries of this category (see README).")
@_text_or_json
@lang_option
def codes(kind: str, klass: int | None, category: str | None, fmt: str, lang: str | None) -> None:
    """List the catalog: basic codes, enhanced codes or provider rules."""
    if category is not None and category not in CATEGORIES:
        refuse("usage.unknown_category", category=repr(category), choices=", ".join(CATEGORIES))
    loc = locale(resolve_lang(lang))
    from probe.render import codes as codes_render

    items = codes_render.rows(catalog.load(), loc, kind, klass, category)
    if fmt == "json":
        echo(dump(items))
    else:
        echo(codes_render.to_text(items, stdout_styler()))
