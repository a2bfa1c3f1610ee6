"""`--help` in the user's language: click lays the page out, the catalog gives the words.

Every command is a `Command`. English help is click's own, from the texts in the code; in
another language `probe.cli.helppage` lays the page out as click does, in that language's
words, wrapped by display width. It loads only when help is asked for.
"""

from __future__ import annotations

import sys

import click


class Command(click.Command):
    """A command of smtp-probe (the group too): `--help` speaks the user's language."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Where `--help` finds a `--lang` that comes after it (the group records the whole
        # command line first; a command invoked on its own records its own).
        ctx.meta.setdefault("smtp_probe.argv", list(args))
        return super().parse_args(ctx, args)

    def get_help(self, ctx: click.Context) -> str:
        from probe.cli.usage import argv_of, error_lang

        lang = error_lang(ctx, argv_of(ctx))
        if lang == "en":
            return super().get_help(ctx)
        from probe.cli.helppage import HelpFormatter

        formatter = HelpFormatter(lang, width=ctx.terminal_width, max_width=ctx.max_content_width)
        self.format_help(ctx, formatter)
        page = formatter.getvalue().rstrip("\n")
        # A terminal whose encoding cannot show the language (LANG=zh_TW.Big5 reads as zh)
        # gets the English page, not a traceback.
        try:
            page.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
        except (UnicodeEncodeError, LookupError):
            return super().get_help(ctx)
        return page
